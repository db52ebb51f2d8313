// The wall display: new feed events arrive over Server-Sent Events; totals refresh after each one.
(function () {
  "use strict";
  var list = document.getElementById("feed");
  var status = document.getElementById("live-status");
  var MAX_ITEMS = 12;

  function yuan(fen) { var s = fen < 0 ? "-" : ""; fen = Math.abs(fen); return s + Math.floor(fen / 100) + "." + String(fen % 100).padStart(2, "0"); }
  function when(iso) {
    var p = {};
    new Intl.DateTimeFormat("en-GB", {timeZone: "Asia/Shanghai", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hour12: false})
      .formatToParts(new Date(iso)).forEach(function (x) { p[x.type] = x.value; });
    return p.month + "月" + p.day + "日 " + p.hour + ":" + p.minute;
  }
  function render(item) {
    var li = document.createElement("li");
    li.dataset.id = item.id;
    li.dataset.kind = item.kind;
    li.className = "kind-" + item.kind + " fresh";
    var a = document.createElement("span"); a.className = "when"; a.textContent = when(item.occurred_at);
    var b = document.createElement("span"); b.className = "what"; b.textContent = item.text;
    li.appendChild(a); li.appendChild(b);
    return li;
  }
  function show(message) {
    var item = message.event;
    var old = list.querySelector('li[data-id="' + item.id + '"]');
    if (old) old.remove();
    var empty = list.querySelector("li.empty");
    if (empty) empty.remove();
    list.insertBefore(render(item), list.firstChild);
    while (list.children.length > MAX_ITEMS) list.removeChild(list.lastChild);
  }
  function refreshTotals() {
    fetch("/api/v1/feed/stats", {cache: "no-store"}).then(function (r) { return r.ok ? r.json() : null; }).then(function (s) {
      if (!s) return;
      document.querySelectorAll("[data-stat]").forEach(function (el) {
        var key = el.dataset.stat, v = s.totals[key];
        if (v === undefined) return;
        var value = el.querySelector(".value");
        if ("fen" in el.dataset) { el.dataset.fen = v; if (value) value.textContent = "¥" + yuan(v); }
        else { el.dataset.count = v; if (value) value.textContent = v + (key === "donors" ? " 位" : " 份"); }
      });
    }).catch(function () {});
  }
  if (!window.EventSource) { status.textContent = "这个浏览器不支持实时更新，请定时刷新"; return; }
  var source = new EventSource("/api/v1/feed/stream");
  source.addEventListener("open", function () { status.textContent = "实时更新中"; document.body.dataset.live = "open"; });
  source.addEventListener("error", function () { status.textContent = "连接中断，正在重连…"; document.body.dataset.live = "retrying"; });
  source.addEventListener("feed", function (e) {
    try { show(JSON.parse(e.data)); } catch (err) { return; }
    refreshTotals();
  });
})();
