// Filtering and row selection for the episode browser; without JS every link still works.
(function () {
  var search = document.getElementById("ep-search");
  var state = document.getElementById("ep-state");
  var count = document.getElementById("ep-count");
  if (!search) { return; }
  var rows = Array.prototype.slice.call(document.querySelectorAll("#ep-table tbody tr"));
  var texts = new Map();
  function text(row) {
    if (!texts.has(row)) {
      var detail = document.getElementById(row.dataset.target);
      texts.set(row, (row.textContent + " " + (detail ? detail.textContent : "")).toLowerCase());
    }
    return texts.get(row);
  }
  function filter() {
    var query = search.value.trim().toLowerCase();
    var shown = 0;
    rows.forEach(function (row) {
      var visible = (state.value === "all" || row.dataset.state === state.value) &&
        (!query || text(row).indexOf(query) >= 0);
      row.hidden = !visible;
      if (visible) { shown += 1; }
    });
    count.textContent = shown + " of " + rows.length + " shown";
  }
  function select() {
    var target = location.hash.slice(1);
    rows.forEach(function (row) {
      row.classList.toggle("selected", row.dataset.target === target);
    });
  }
  rows.forEach(function (row) {
    row.addEventListener("click", function () { location.hash = row.dataset.target; });
  });
  search.addEventListener("input", filter);
  state.addEventListener("change", filter);
  window.addEventListener("hashchange", select);
  filter();
  select();
})();
