// One sink: its configuration and delivery status, the log of delivery attempts with the
// receiver's response codes, and its dead letters with replay. Attempts, dead letters and
// status come from the delivery status API; a server without it shows them as unavailable.

import * as api from "./api.js";
import {fmtNumber, fmtTime, h, notice, replace, table} from "./dom.js";
import {sinkTarget} from "./streams.js";

export function renderSink(main, match) {
  const sid = match[1];
  const base = `/callstream/v1/Sinks/${sid}`;
  const message = h("div", {id: "sink-message", "aria-live": "polite"});
  const details = h("div", {id: "sink-details"}, notice("info", "Loading…"));
  const status = h("div", {id: "sink-status"});
  const attempts = h("div", {id: "attempts"});
  const dead = h("div", {id: "dead-letters"});
  const say = (kind, text) => replace(message, notice(kind, text));
  const testId = h("input", {id: "validate-test-id", placeholder: "test_id from the test event"});
  const validate = h("form", {id: "validate-form", class: "inline-form"},
    h("label", {for: "validate-test-id"}, "Validate with test_id"), testId,
    h("button", {type: "submit"}, "Validate"));

  replace(main,
    h("p", null, h("a", {href: "#/streams"}, "← Event Streams")),
    h("h1", null, sid), message, details,
    h("div", {class: "toolbar"},
      h("button", {type: "button", id: "sink-test", onclick: () => act("Test", async () => {
        await api.post(`/v1/Sinks/${sid}/Test`, {});
        say("ok", "Test event queued; it shows in the attempts below once sent.");
      })}, "Send test event"),
      h("button", {type: "button", id: "sink-enable", hidden: true, onclick: () => act("Enable", async () => {
        await api.post(`${base}/Enable`, {});
        say("ok", "Sink enabled.");
      })}, "Enable"),
      validate),
    h("section", null, h("h2", null, "Delivery status"), status),
    h("section", null, h("h2", null, "Attempts"), attempts),
    h("section", null, h("div", {class: "title-row"}, h("h2", null, "Dead letters"),
      h("button", {type: "button", id: "replay-all", onclick: () => act("Replay", async () => {
        const result = await api.post(`${base}/DeadLetters/Replay`, {});
        say("ok", `Replayed ${result.replayed} dead letters.`);
      })}, "Replay all")), dead));

  validate.addEventListener("submit", (event) => {
    event.preventDefault();
    act("Validate", async () => {
      await api.post(`/v1/Sinks/${sid}/Validate`, {TestId: testId.value.trim()});
      say("ok", "The sink is validated.");
    });
  });

  const controller = new AbortController();
  const options = {signal: controller.signal};
  let deliveryApi = true;

  async function act(label, work) {
    try {
      await work();
    } catch (error) {
      say("error", `${label}: ${error.message}`);
    }
    refresh();
  }

  async function loadDetails() {
    try {
      const sink = await api.get(`/v1/Sinks/${sid}`, null, options);
      // Only a sink that delivery marked failed can be re-enabled.
      main.querySelector("#sink-enable").hidden = sink.status !== "failed";
      replace(details, h("dl", {class: "facts"},
        h("dt", null, "Description"), h("dd", null, sink.description),
        h("dt", null, "Type"), h("dd", null, sink.sink_type),
        h("dt", null, "Status"), h("dd", null, h("span", {class: `badge ${sink.status}`, id: "sink-api-status"}, sink.status)),
        h("dt", null, "Target"), h("dd", null, sinkTarget(sink)),
        h("dt", null, "Created"), h("dd", null, fmtTime(sink.date_created))));
    } catch (error) {
      if (!controller.signal.aborted) replace(details, notice("error", error.message));
    }
  }

  function unavailable(error) {
    // A route the server lacks answers Starlette's own "Not Found"; an unknown sink says so.
    const missing = error.status === 404 && error.message === "Not Found";
    if (missing) deliveryApi = false;
    const text = missing
      ? "Unavailable: this server does not report delivery status." : `Unavailable: ${error.message}`;
    for (const box of [status, attempts, dead]) replace(box, notice("info", text));
  }

  async function loadDelivery() {
    if (!deliveryApi) return;
    try {
      const [all, tried, letters] = await Promise.all([
        api.get("/callstream/v1/Sinks/Status", null, options),
        api.get(`${base}/Attempts`, {PageSize: 50}, options),
        api.get(`${base}/DeadLetters`, null, options),
      ]);
      const mine = all.sinks.find((s) => s.sink_sid === sid);
      replace(status, mine ? h("dl", {class: "facts"},
        [["Status", mine.status], ["Delivered", mine.delivered], ["Retried", mine.retried],
          ["Failed", mine.failed], ["Dead letters", mine.dead_lettered], ["Pending", mine.pending],
          ["Lag", mine.lag_seconds == null ? "—" : `${fmtNumber(mine.lag_seconds)} s`],
          ["Consecutive failures", mine.consecutive_failures],
          ["Last success", fmtTime(mine.last_success_at)], ["Last error", mine.last_error || "—"],
          ["Throttled rate", mine.throttled_rate == null ? "—" : `${mine.throttled_rate}/s`]]
          .map(([k, v]) => [h("dt", null, k), h("dd", {"data-field": k}, String(v))]))
        : notice("info", "No delivery status for this sink yet."));
      replace(attempts, tried.attempts.length ? table(
        ["Time", "Events", "Result", "Response", "Error", "Duration"],
        tried.attempts.map((a) => h("tr", {class: a.ok ? "ok" : "failed"},
          h("td", null, fmtTime(a.time)), h("td", {class: "num"}, String(a.events)),
          h("td", null, a.ok ? "delivered" : "failed"),
          h("td", {class: "num", "data-status": a.status == null ? "" : String(a.status)},
            a.status == null ? "—" : String(a.status)),
          h("td", {class: "error-text"}, a.error || ""),
          h("td", {class: "num"}, `${fmtNumber(a.duration_ms, 0)} ms`))),
        {id: "attempts-table"}) : notice("info", "No delivery attempts yet."));
      replace(dead, letters.dead_letters.length ? table(
        ["Event", "Type", "Enqueued", "Dead since", "Attempts", "Reason", ""],
        letters.dead_letters.map((d) => h("tr", {"data-event": d.event_id},
          h("td", null, d.event_id), h("td", null, d.type), h("td", null, fmtTime(d.enqueued_at)),
          h("td", null, fmtTime(d.dead_at)), h("td", {class: "num"}, String(d.attempts)),
          h("td", {class: "error-text"}, d.reason || ""),
          h("td", null, h("button", {type: "button", "data-action": "replay", onclick: () => act("Replay", async () => {
            const result = await api.post(`${base}/DeadLetters/Replay`, {EventId: d.event_id});
            say("ok", `Replayed ${result.replayed} dead letter.`);
          })}, "Replay")))),
        {id: "dead-letters-table"}) : notice("info", "No dead letters."));
    } catch (error) {
      if (!controller.signal.aborted) unavailable(error);
    }
  }

  function refresh() {
    loadDetails();
    loadDelivery();
  }

  refresh();
  const timer = setInterval(refresh, 3000);
  return () => {
    controller.abort();
    clearInterval(timer);
  };
}
