// The console's shell: login gate, navigation, and a hash router that gives each page the
// main element and expects back a function that stops whatever the page started.

import * as api from "./api.js";
import {h, replace} from "./dom.js";
import {renderLogin} from "./login.js";
import {renderOverview} from "./overview.js";
import {renderCalls} from "./calls.js";
import {renderCall} from "./call.js";
import {renderStreams} from "./streams.js";
import {renderSink} from "./sink.js";

const ROUTES = [
  [/^#\/overview$/, "overview", renderOverview],
  [/^#\/calls(?:\?(.*))?$/, "calls", renderCalls],
  [/^#\/calls\/(CA[0-9a-fA-F]{32})$/, "calls", renderCall],
  [/^#\/streams$/, "streams", renderStreams],
  [/^#\/streams\/sinks\/([A-Za-z0-9]{2,64})$/, "streams", renderSink],
];

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const logout = document.getElementById("logout");
let stop = () => {};

function showChrome(current) {
  const creds = api.session();
  nav.hidden = !creds;
  logout.hidden = !creds;
  replace(who, creds ? creds.account_sid : "");
  for (const link of nav.querySelectorAll("a")) {
    link.classList.toggle("current", link.dataset.nav === current);
  }
}

function route() {
  stop();
  stop = () => {};
  const hash = location.hash || "#/overview";
  if (!api.session()) {
    showChrome(null);
    stop = renderLogin(main, () => {
      location.hash = hash.startsWith("#/login") ? "#/overview" : hash;
      route();
    }) || stop;
    return;
  }
  for (const [pattern, section, render] of ROUTES) {
    const match = pattern.exec(hash);
    if (match) {
      showChrome(section);
      stop = render(main, match) || stop;
      return;
    }
  }
  if (hash === "#/login" || hash === "#/" || hash === "#") {
    location.hash = "#/overview";
    return;
  }
  showChrome(null);
  replace(main, h("h1", null, "Not found"), h("p", null, h("a", {href: "#/overview"}, "Overview")));
}

api.setUnauthorizedHandler(() => {
  api.clearSession();
  route();
});

logout.addEventListener("click", () => {
  api.clearSession();
  location.hash = "#/login";
  route();
});

window.addEventListener("hashchange", route);
route();
