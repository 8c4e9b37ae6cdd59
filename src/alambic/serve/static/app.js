"use strict";
const $ = (selector) => document.querySelector(selector);
const keyInput = $("#key");
keyInput.value = sessionStorage.getItem("alambic-key") || "";
keyInput.addEventListener("change", () => sessionStorage.setItem("alambic-key", keyInput.value.trim()));

function headers() {
  const key = keyInput.value.trim();
  const result = { "Content-Type": "application/json" };
  if (key) result.Authorization = "Bearer " + key;
  return result;
}

function showError(message) { $("#error").textContent = message || ""; }

async function failure(response) {
  try { return (await response.json()).error.message; } catch (e) { return response.status + " " + response.statusText; }
}

for (const button of document.querySelectorAll("nav button")) {
  button.addEventListener("click", () => {
    for (const other of document.querySelectorAll("nav button, .tab")) other.classList.remove("active");
    button.classList.add("active");
    $("#" + button.dataset.tab).classList.add("active");
    if (button.dataset.tab === "review") loadItems(0);
  });
}

// Chat ------------------------------------------------------------------
let session = sessionStorage.getItem("alambic-session") || crypto.randomUUID();
function setSession(value) { session = value; sessionStorage.setItem("alambic-session", value); $("#session").textContent = value; }
setSession(session);
$("#new-session").addEventListener("click", () => { $("#messages").replaceChildren(); setSession(crypto.randomUUID()); });

function bubble(role, text) {
  const element = document.createElement("div");
  element.className = "message " + role;
  element.dir = "auto";
  element.textContent = text;
  $("#messages").append(element);
  return element;
}

function showDetails(element, details) {
  if (!details) return;
  const box = document.createElement("details");
  box.className = "agent";
  const summary = document.createElement("summary");
  const parts = [];
  if (details.tool_calls.length) parts.push("tools: " + details.tool_calls.map((c) => c.tool).join(", "));
  if (details.passages.length) parts.push(details.passages.length + " passages");
  if (details.handoff) { parts.push("handed off: " + details.handoff); element.classList.add("handoff"); }
  if (details.ticket) parts.push("ticket " + details.ticket);
  summary.textContent = parts.join(" · ") || "details";
  box.append(summary);
  for (const call of details.tool_calls) {
    const line = document.createElement("pre");
    line.textContent = call.tool + " " + JSON.stringify(call.arguments) + " → " + JSON.stringify(call.ok ? call.result : call.error);
    box.append(line);
  }
  for (const passage of details.passages) {
    const line = document.createElement("blockquote");
    line.dir = "auto";
    line.textContent = passage.citation + ": " + passage.text;
    box.append(line);
  }
  element.append(box);
}

async function ask(question) {
  bubble("user", question);
  const answer = bubble("assistant", "");
  const response = await fetch("/v1/chat/completions", {
    method: "POST", headers: headers(),
    body: JSON.stringify({ model: "agent", stream: true, user: session, messages: [{ role: "user", content: question }] }),
  });
  if (!response.ok) { answer.remove(); showError(await failure(response)); return; }
  showError("");
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "", details = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    const events = buffered.split("\n\n");
    buffered = events.pop();
    for (const event of events) {
      const data = event.replace(/^data: ?/, "");
      if (!data || data === "[DONE]") continue;
      const chunk = JSON.parse(data);
      answer.textContent += chunk.choices[0].delta.content || "";
      details = chunk.alambic || details;
    }
  }
  showDetails(answer, details);
}

$("#ask").addEventListener("submit", (event) => {
  event.preventDefault();
  const question = $("#question").value.trim();
  if (!question) return;
  $("#question").value = "";
  ask(question).catch((error) => showError(String(error)));
});

// Review ------------------------------------------------------------------
let offset = 0;
function fillSelect(select, values) {
  const chosen = select.value;
  select.replaceChildren(new Option("all", ""), ...values.map((value) => new Option(value, value)));
  select.value = chosen;
}

async function loadItems(from) {
  offset = from;
  const query = new URLSearchParams({ recipe: $("#recipe").value, status: $("#status").value, reason: $("#reason").value, offset });
  const response = await fetch("/ui/api/items?" + query, { headers: headers() });
  if (!response.ok) { showError(await failure(response)); return; }
  showError("");
  const page = await response.json();
  fillSelect($("#recipe"), page.recipes);
  fillSelect($("#reason"), page.reasons);
  $("#total").textContent = page.total + " items";
  const body = $("#items tbody");
  if (from === 0) body.replaceChildren();
  for (const item of page.items) body.append(itemRow(item));
  $("#more").hidden = offset + page.items.length >= page.total;
}

function itemRow(item) {
  const row = document.createElement("tr");
  row.dataset.id = item.id;
  row.className = item.status;
  const cells = [item.id.slice(0, 10) + "…\n" + item.recipe, item.question].map((text) => {
    const cell = document.createElement("td");
    cell.dir = "auto";
    cell.textContent = text;
    return cell;
  });
  const answerCell = document.createElement("td");
  const answer = document.createElement("textarea");
  answer.dir = "auto";
  answer.value = item.answer;
  answerCell.append(answer);
  const status = document.createElement("td");
  status.className = "status";
  status.textContent = item.status + (item.reason ? " (" + item.reason + ")" : "");
  const actions = document.createElement("td");
  for (const [label, decision] of [["Approve", "ok"], ["Reject", "rejected"], ["Save edit", "edit"]]) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = label;
    button.addEventListener("click", () => decide(row, decision === "edit" ? "ok" : decision, decision === "edit" ? answer.value : null));
    actions.append(button);
  }
  row.append(...cells, answerCell, status, actions);
  return row;
}

async function decide(row, status, answer) {
  const body = answer === null ? { status } : { status, answer };
  const response = await fetch("/ui/api/items/" + encodeURIComponent(row.dataset.id), { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (!response.ok) { showError(await failure(response)); return; }
  showError("");
  const item = (await response.json()).item;
  row.className = item.status;
  row.querySelector(".status").textContent = item.status + (item.reason ? " (" + item.reason + ")" : "");
}

$("#filters").addEventListener("submit", (event) => { event.preventDefault(); loadItems(0); });
$("#more").addEventListener("click", () => loadItems(offset + 50));

// Report ------------------------------------------------------------------
for (const button of document.querySelectorAll("[data-report]")) {
  button.addEventListener("click", async () => {
    const response = await fetch("/ui/api/report/" + button.dataset.report, { headers: headers() });
    if (!response.ok) { showError(await failure(response)); return; }
    showError("");
    $("#report-frame").srcdoc = await response.text();
  });
}
