// prefloop web app: the keyboard and drag for the labeling pages. Everything listens on the
// document, so pages that htmx swaps in work without re-binding. No data from the server is
// ever evaluated: the page's text reaches the DOM only as text.
(function () {
  "use strict";

  function form() { return document.getElementById("label-form"); }

  function typing(target) {
    if (!target || !target.tagName) return false;
    var tag = target.tagName.toLowerCase();
    if (tag === "textarea" || tag === "select") return true;
    return tag === "input" && !/^(radio|checkbox|button|submit|hidden)$/.test(target.type);
  }

  function send(action) {
    var f = form();
    if (!f) return;
    var field = document.getElementById("action");
    if (field) field.value = action;
    if (action !== "submit") {
      // skip and discard need no answer: leave the required fields out of the check
      f.noValidate = true;
    }
    if (f.requestSubmit) f.requestSubmit(); else f.submit();
  }

  function choose(key) {
    var f = form();
    if (!f) return false;
    var input = f.querySelector('input[type=radio][data-key="' + key + '"]');
    if (!input) return false;
    input.checked = true;
    input.focus();
    return true;
  }

  function move(item, step) {
    var list = item.parentElement;
    if (step < 0 && item.previousElementSibling) {
      list.insertBefore(item, item.previousElementSibling);
    } else if (step > 0 && item.nextElementSibling) {
      list.insertBefore(item.nextElementSibling, item);
    }
    item.focus();
    announce(item);
  }

  function announce(item) {
    var items = Array.prototype.slice.call(item.parentElement.children);
    item.setAttribute("aria-label", "output at position " + (items.indexOf(item) + 1));
  }

  function toggleHelp(show) {
    var help = document.getElementById("help");
    var button = document.getElementById("help-toggle");
    if (!help) return;
    var open = show === undefined ? help.hidden : show;
    help.hidden = !open;
    if (button) button.setAttribute("aria-expanded", open ? "true" : "false");
  }

  document.addEventListener("click", function (event) {
    var target = event.target.closest ? event.target.closest("[data-action],#help-toggle") : null;
    if (!target) return;
    if (target.id === "help-toggle") { toggleHelp(); return; }
    event.preventDefault();
    send(target.getAttribute("data-action"));
  });

  document.addEventListener("keydown", function (event) {
    if (event.defaultPrevented || event.metaKey || event.altKey) return;
    var target = event.target;
    if (event.key === "Enter" && event.ctrlKey && form() && form().contains(target)) {
      event.preventDefault();
      send("submit");
      return;
    }
    if (typing(target) || event.ctrlKey) return;
    var f = form();
    if (event.key === "?") { event.preventDefault(); toggleHelp(); return; }
    if (event.key === "Escape") { toggleHelp(false); return; }
    if (event.key === "g") {
      var guide = document.getElementById("guidelines");
      if (guide) { event.preventDefault(); guide.open = !guide.open; guide.querySelector("summary").focus(); }
      return;
    }
    if (!f) return;
    var kind = f.getAttribute("data-kind");
    if (/^[1-9]$/.test(event.key) && choose(event.key)) { event.preventDefault(); return; }
    if (kind === "compare" && (event.key === "ArrowLeft" || event.key === "ArrowRight")) {
      event.preventDefault();
      choose(event.key === "ArrowLeft" ? "1" : "2");
      return;
    }
    if (kind === "rank" && target.parentElement && target.parentElement.id === "rank-list" &&
        (event.key === "ArrowUp" || event.key === "ArrowDown")) {
      event.preventDefault();
      move(target, event.key === "ArrowUp" ? -1 : 1);
      return;
    }
    if (event.key === "Enter" && target.tagName.toLowerCase() !== "button" &&
        target.tagName.toLowerCase() !== "a" && target.tagName.toLowerCase() !== "summary") {
      event.preventDefault();
      send("submit");
      return;
    }
    if (event.key === "s") { event.preventDefault(); send("skip"); return; }
    if (event.key === "x") { event.preventDefault(); send("discard"); }
  });

  // drag and drop in a ranking
  var dragged = null;
  document.addEventListener("dragstart", function (event) {
    var item = event.target.closest ? event.target.closest("#rank-list > li") : null;
    if (!item) return;
    dragged = item;
    item.classList.add("dragging");
    event.dataTransfer.effectAllowed = "move";
    event.dataTransfer.setData("text/plain", "");
  });
  document.addEventListener("dragover", function (event) {
    var over = event.target.closest ? event.target.closest("#rank-list > li") : null;
    if (!dragged || !over || over === dragged) return;
    event.preventDefault();
    var box = over.getBoundingClientRect();
    var after = event.clientY > box.top + box.height / 2;
    over.parentElement.insertBefore(dragged, after ? over.nextElementSibling : over);
  });
  document.addEventListener("dragend", function () {
    if (dragged) { dragged.classList.remove("dragging"); announce(dragged); }
    dragged = null;
  });

  // after htmx swaps a new item in, put the focus where the keyboard starts
  document.addEventListener("htmx:afterSettle", function () {
    var f = form();
    if (!f) return;
    var text = document.getElementById("edit-text");
    if (text && f.contains(text)) { text.focus(); return; }
    if (document.activeElement === document.body || !document.activeElement) f.focus();
  });
  document.addEventListener("DOMContentLoaded", function () {
    var text = document.getElementById("edit-text");
    if (text) text.focus();
  });
})();
