// Log in with an account SID and auth token, or an API key SID and secret: the same
// credentials as the REST API. They are checked against callstream before being kept.

import * as api from "./api.js";
import {h, notice, replace} from "./dom.js";

export function renderLogin(main, done) {
  const username = h("input", {
    id: "login-username", name: "username", required: true, autocomplete: "username",
    spellcheck: "false", placeholder: "AC… or SK…",
  });
  const password = h("input", {
    id: "login-password", name: "password", type: "password", required: true,
    autocomplete: "current-password",
  });
  const message = h("div", {id: "login-message"});
  const button = h("button", {type: "submit", id: "login-submit"}, "Log in");
  const form = h("form", {id: "login-form", class: "card narrow"},
    h("h1", null, "Log in to callstream"),
    h("label", {for: "login-username"}, "Account SID or API key SID"), username,
    h("label", {for: "login-password"}, "Auth token or API key secret"), password,
    button, message,
    h("p", {class: "hint"},
      "`callstream accounts list --show-tokens` shows the account's credentials."));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    replace(message, notice("info", "Checking…"));
    const credentials = {username: username.value.trim(), password: password.value};
    try {
      const account = await api.get("/callstream/v1/Account", null, {credentials});
      api.saveSession({...credentials, account_sid: account.account_sid});
      done();
    } catch (error) {
      const text = error.status === 401
        ? "Those credentials were refused: check the SID and the token or secret."
        : `Could not log in: ${error.message}`;
      replace(message, notice("error", text));
      button.disabled = false;
    }
  });
  replace(main, form);
  username.focus();
  return () => {};
}
