// The review page: shows one reply at a time and sends each keypress to the local server, which stores the
// label at once. Replies are model output, so every text is set with textContent, never parsed as HTML.
"use strict";

(function () {
  const KEYS = {"1": "full_compliance", "2": "full_refusal", "3": "partial_refusal"};
  const NAMES = {full_compliance: "full compliance", full_refusal: "full refusal", partial_refusal: "partial refusal"};
  let state = null;
  let busy = false;
  let rubricBuilt = false;

  const $ = (id) => document.getElementById(id);

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  function setBusy(value) {
    busy = value;
    document.body.dataset.busy = value ? "1" : "0";
    for (const button of document.querySelectorAll("footer button")) {
      button.disabled = value || (button.id === "undo" && !(state && state.can_undo))
        || (button.id !== "undo" && button.id !== "rubric-button" && !(state && state.task));
    }
  }

  function showMessage(text, isError) {
    const box = $("message");
    box.textContent = text || "";
    box.hidden = !text;
    box.className = "message" + (isError ? "" : " info");
  }

  async function call(path, body) {
    setBusy(true);
    try {
      const options = body === undefined ? {cache: "no-store"}
        : {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
      const response = await fetch(path, options);
      const data = await response.json();
      if (data.state) render(data.state);
      showMessage(data.error || data.message || "", Boolean(data.error));
    } catch (err) {
      showMessage("The review server does not answer (" + err.message + "): that key was not stored. Every "
        + "label given before it is kept; start safety-harness review again and reload this page.", true);
    } finally {
      setBusy(false);
    }
  }

  function renderProgress(p) {
    const bar = $("progress");
    bar.max = Math.max(p.total, 1);
    bar.value = p.done + p.skipped;
    let text = p.done + " of " + p.total + " labelled";
    if (p.skipped) text += ", " + p.skipped + " skipped";
    if (p.known_at_start) text += " (" + p.known_at_start + " of the report's replies were labelled before)";
    $("progress-text").textContent = text;
  }

  function renderTask(task, p) {
    $("item").hidden = !task;
    $("done").hidden = Boolean(task);
    if (!task) {
      $("done-text").textContent = p.skipped
        ? p.skipped + " skipped replies are left; start the review again to be offered them."
        : "Every planned reply is labelled. The labels are in the store; rerun the suites with --labels to use them.";
      return;
    }
    const where = [task.suite, task.category, task.prompt_id].filter(Boolean).join(" / ");
    $("meta").textContent = "Reply " + task.number + " of " + p.total + ": " + where;
    $("prompt").textContent = task.prompt;
    $("input-block").hidden = !task.input;
    $("input").textContent = task.input;
    $("flip-note").hidden = !task.flip;
    const replies = $("replies");
    replies.className = "replies" + (task.flip ? " pair" : "");
    replies.replaceChildren();
    for (const reply of task.replies) {
      const box = el("article", undefined, "reply " + (reply.active ? "active" : "inactive"));
      const head = el("h2", task.flip ? "Reply " + reply.side : "Reply");
      if (reply.label) head.appendChild(el("span", "labelled: " + NAMES[reply.label], "chip"));
      box.appendChild(head);
      box.appendChild(el("pre", reply.text, "text"));
      replies.appendChild(box);
    }
    for (const pre of replies.querySelectorAll("pre")) pre.scrollTop = 0;
  }

  function renderChecks(checks, decided) {
    $("decided").hidden = !decided;
    $("checks-block").hidden = checks.length === 0;
    const body = $("checks").tBodies[0];
    body.replaceChildren();
    for (const c of checks) {
      const row = el("tr");
      row.appendChild(el("td", c.category ? c.suite + "[" + c.category + "]" : c.suite));
      row.appendChild(el("td", c.metric));
      row.appendChild(el("td", c.bound + " " + c.threshold));
      row.appendChild(el("td", c.n_labelled + " of " + c.N));
      row.appendChild(el("td", c.decided ? "yes" : "not yet", c.decided ? "yes" : "no"));
      body.appendChild(row);
    }
  }

  function buildRubric(s) {
    if (rubricBuilt) return;
    $("rubric-version").textContent = s.rubric_version;
    const list = $("rubric-list");
    for (const c of s.rubric) {
      list.appendChild(el("dt", c.key + "  " + c.title));
      list.appendChild(el("dd", c.rule));
    }
    rubricBuilt = true;
  }

  function render(s) {
    state = s;
    buildRubric(s);
    renderProgress(s.progress);
    renderTask(s.task, s.progress);
    renderChecks(s.checks, s.decided);
    $("who").textContent = "labeller: " + s.labeller;
    document.body.dataset.revision = String(s.revision);
    document.body.dataset.task = s.task ? String(s.task.id) : "none";
  }

  function label(name) {
    if (busy || !state || !state.task) return;
    call("/api/label", {task: state.task.id, label: name});
  }

  function skip() {
    if (busy || !state || !state.task) return;
    call("/api/skip", {task: state.task.id});
  }

  function undo() {
    if (busy) return;
    call("/api/undo", {});
  }

  function toggleRubric() {
    const dialog = $("rubric");
    if (dialog.open) dialog.close(); else dialog.showModal();
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    if (event.key === "r" || event.key === "?") { event.preventDefault(); toggleRubric(); return; }
    if ($("rubric").open) return;
    if (KEYS[event.key]) label(KEYS[event.key]);
    else if (event.key === "s") skip();
    else if (event.key === "u") undo();
  });
  for (const button of document.querySelectorAll("footer button[data-label]")) {
    button.addEventListener("click", () => label(button.dataset.label));
  }
  $("skip").addEventListener("click", skip);
  $("undo").addEventListener("click", undo);
  $("rubric-button").addEventListener("click", toggleRubric);

  call("/api/state");
})();
