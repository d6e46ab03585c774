// authgate console: the little behaviour the pages have (no inline script: CSP).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // "Copy" next to a secret shown once.
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      const source = document.getElementById(button.dataset.copy);
      if (!source) return;
      source.select();
      try {
        await navigator.clipboard.writeText(source.value);
        button.textContent = "Copied";
      } catch {
        button.textContent = "Select and copy";
      }
    });
  }
  // Danger buttons ask first (a real confirm; the form posts only when accepted).
  for (const form of document.querySelectorAll("form")) {
    const danger = form.querySelector("button.danger");
    if (!danger) continue;
    form.addEventListener("submit", (event) => {
      if (!window.confirm(`${danger.textContent}: are you sure?`)) event.preventDefault();
    });
  }
});
