// Progressive enhancement of the server-rendered pages: every page works without it.
import { startLive } from "./live.js";

function confirmations() {
  // A button with data-confirm asks before its form is sent.
  document.addEventListener("submit", (event) => {
    const button = event.submitter;
    const text = button && button.dataset.confirm;
    if (text && !window.confirm(text)) event.preventDefault();
  });
}

function selectAll() {
  for (const box of document.querySelectorAll("input[data-select-all]")) {
    const name = box.dataset.selectAll;
    box.hidden = false;
    box.addEventListener("change", () => {
      for (const item of document.querySelectorAll(`input[type=checkbox][name="${name}"]`)) {
        item.checked = box.checked;
      }
    });
  }
}

function printButtons() {
  for (const button of document.querySelectorAll("[data-print]")) {
    button.addEventListener("click", () => window.print());
  }
}

confirmations();
selectAll();
printButtons();
startLive(document.body.dataset.live);
