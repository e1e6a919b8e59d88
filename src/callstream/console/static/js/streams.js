// Event Streams: sinks and subscriptions through the Event Streams v1 REST API
// (form-encoded POSTs with Twilio's parameter names, as twilio-python sends them).

import * as api from "./api.js";
import {fmtTime, h, notice, replace, table} from "./dom.js";

const SINK_FIELDS = {
  webhook: [
    ["destination", "Destination URL", "https://hooks.example.com/twilio"],
  ],
  kinesis: [
    ["arn", "Stream ARN", "arn:aws:kinesis:us-east-1:123456789012:stream/calls"],
    ["role_arn", "Role ARN", "arn:aws:iam::123456789012:role/callstream"],
    ["external_id", "External ID", ""],
  ],
  segment: [["write_key", "Write key", ""]],
};

export function sinkTarget(sink) {
  const c = sink.sink_configuration || {};
  return c.destination || c.arn || (c.write_key ? "Segment write key" : "");
}

function sinkForm(onCreated, say) {
  const type = h("select", {name: "SinkType", id: "sink-type"},
    Object.keys(SINK_FIELDS).map((t) => h("option", {value: t}, t)));
  const description = h("input", {name: "Description", id: "sink-description", required: true});
  const groups = {};
  for (const [kind, fields] of Object.entries(SINK_FIELDS)) {
    groups[kind] = h("div", {class: "fieldset", "data-sink-type": kind, hidden: kind !== "webhook"},
      fields.map(([name, label, placeholder]) => h("label", null, label,
        h("input", {name, id: `sink-${kind}-${name}`, placeholder}))));
  }
  const method = h("select", {id: "sink-webhook-method"},
    h("option", {value: "POST"}, "POST"), h("option", {value: "GET"}, "GET"));
  const batch = h("input", {type: "checkbox", id: "sink-webhook-batch"});
  groups.webhook.append(h("label", null, "Method", method),
    h("label", {class: "inline"}, batch, " Batch events"));
  type.addEventListener("change", () => {
    for (const [kind, group] of Object.entries(groups)) group.hidden = kind !== type.value;
  });
  const form = h("form", {id: "sink-form", class: "card"},
    h("h3", null, "New sink"),
    h("label", null, "Description", description), h("label", null, "Type", type),
    Object.values(groups), h("button", {type: "submit", id: "sink-create"}, "Create sink"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const config = {};
    for (const input of groups[type.value].querySelectorAll("input[name]")) {
      if (input.value.trim()) config[input.name] = input.value.trim();
    }
    if (type.value === "webhook") {
      config.method = method.value;
      config.batch_events = batch.checked;
    }
    try {
      const sink = await api.post("/v1/Sinks", {
        Description: description.value, SinkType: type.value,
        SinkConfiguration: JSON.stringify(config),
      });
      say("ok", `Created sink ${sink.sid}.`);
      form.reset();
      type.dispatchEvent(new Event("change"));
      onCreated();
    } catch (error) {
      say("error", `Sink not created: ${error.message}`);
    }
  });
  return form;
}

function subscriptionForm(sinks, types, onCreated, say) {
  const description = h("input", {name: "Description", id: "subscription-description", required: true});
  const sink = h("select", {name: "SinkSid", id: "subscription-sink"},
    sinks.map((s) => h("option", {value: s.sid}, `${s.description} (${s.sid})`)));
  const boxes = types.map((t) => h("label", {class: "inline type-choice"},
    h("input", {type: "checkbox", value: t.type, "data-type": t.type}), ` ${t.type}`));
  const all = h("button", {type: "button", id: "subscription-all"}, "Select all");
  all.addEventListener("click", () => {
    for (const box of form.querySelectorAll("input[data-type]")) box.checked = true;
  });
  const form = h("form", {id: "subscription-form", class: "card"},
    h("h3", null, "New subscription"),
    h("label", null, "Description", description), h("label", null, "Sink", sink),
    h("fieldset", null, h("legend", null, "Event types (latest schema version) "), all,
      h("div", {class: "type-list"}, boxes)),
    h("button", {type: "submit", id: "subscription-create"}, "Create subscription"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const chosen = [...form.querySelectorAll("input[data-type]:checked")].map((b) => b.value);
    if (!chosen.length) {
      say("error", "Choose at least one event type.");
      return;
    }
    try {
      const created = await api.post("/v1/Subscriptions", {
        Description: description.value, SinkSid: sink.value,
        Types: chosen.map((type) => JSON.stringify({type})),
      });
      say("ok", `Created subscription ${created.sid}.`);
      onCreated();
    } catch (error) {
      say("error", `Subscription not created: ${error.message}`);
    }
  });
  if (!sinks.length) {
    return h("div", {class: "card"}, h("h3", null, "New subscription"),
      notice("info", "Create a sink first: a subscription sends events to a sink."));
  }
  return form;
}

export function renderStreams(main) {
  const message = h("div", {id: "streams-message", "aria-live": "polite"});
  const sinksBox = h("div", {id: "sinks"}, notice("info", "Loading…"));
  const subsBox = h("div", {id: "subscriptions"});
  const forms = h("div", {class: "forms"});
  const say = (kind, text) => replace(message, notice(kind, text));
  replace(main, h("h1", null, "Event Streams"), message,
    h("section", null, h("h2", null, "Sinks"), sinksBox),
    h("section", null, h("h2", null, "Subscriptions"), subsBox), forms);

  const controller = new AbortController();
  const options = {signal: controller.signal};
  let types = null;

  async function act(label, work) {
    try {
      await work();
    } catch (error) {
      say("error", `${label}: ${error.message}`);
    }
    await load();
  }

  async function load() {
    let sinks, subscriptions;
    try {
      [sinks, subscriptions] = await Promise.all([
        api.getAll("/v1/Sinks", null, "sinks", options),
        api.getAll("/v1/Subscriptions", null, "subscriptions", options),
      ]);
      types = types || await api.getAll("/v1/Types", null, "types", options);
    } catch (error) {
      if (!controller.signal.aborted) replace(sinksBox, notice("error", error.message));
      return;
    }
    const subscribed = await Promise.all(subscriptions.map((sub) =>
      api.getAll(`/v1/Subscriptions/${sub.sid}/SubscribedEvents`, null, "types", options)
        .catch(() => [])));

    replace(sinksBox, sinks.length ? table(
      ["Sink", "Description", "Type", "Status", "Target", "Created", ""],
      sinks.map((sink) => h("tr", {"data-sink": sink.sid},
        h("td", null, h("a", {href: `#/streams/sinks/${sink.sid}`}, sink.sid)),
        h("td", null, sink.description), h("td", null, sink.sink_type),
        h("td", null, h("span", {class: `badge ${sink.status}`}, sink.status)),
        h("td", {class: "wrap"}, sinkTarget(sink)), h("td", null, fmtTime(sink.date_created)),
        h("td", {class: "actions"},
          h("button", {type: "button", "data-action": "test", onclick: () => act("Test", async () => {
            await api.post(`/v1/Sinks/${sink.sid}/Test`, {});
            say("ok", `Test event queued for ${sink.sid}; validate it on the sink's page with the test_id it received.`);
          })}, "Test"),
          h("button", {type: "button", "data-action": "delete", class: "danger", onclick: () => act("Delete", async () => {
            await api.del(`/v1/Sinks/${sink.sid}`);
            say("ok", `Deleted sink ${sink.sid}.`);
          })}, "Delete")))),
      {id: "sinks-table"}) : notice("info", "No sinks yet."));

    replace(subsBox, subscriptions.length ? table(
      ["Subscription", "Description", "Sink", "Event types", ""],
      subscriptions.map((sub, i) => h("tr", {"data-subscription": sub.sid},
        h("td", null, sub.sid), h("td", null, sub.description),
        h("td", null, h("a", {href: `#/streams/sinks/${sub.sink_sid}`}, sub.sink_sid)),
        h("td", {class: "wrap"}, subscribed[i].map((t) =>
          h("span", {class: "tag"}, `${t.type} v${t.schema_version}`))),
        h("td", {class: "actions"},
          h("button", {type: "button", class: "danger", "data-action": "delete", onclick: () => act("Delete", async () => {
            await api.del(`/v1/Subscriptions/${sub.sid}`);
            say("ok", `Deleted subscription ${sub.sid}.`);
          })}, "Delete")))),
      {id: "subscriptions-table"}) : notice("info", "No subscriptions yet."));

    replace(forms, sinkForm(load, say), subscriptionForm(
      sinks.filter((s) => s.status === "active"), types, load, say));
  }

  load();
  return () => controller.abort();
}
