// "Verify a donation": recompute every entry hash and the day's Merkle root in the browser (Web Crypto),
// exactly as app/ledger/chain.py does, and compare with the published daily digest.
(function () {
  "use strict";
  var form = document.getElementById("verify-form");
  var out = document.getElementById("verify-result");
  var enc = new TextEncoder();
  var KIND = {donation: "捐款到账", meal_subsidy: "资助一份长者餐", donation_refund: "退款", donation_refund_release: "退款未成功，款项退回"};

  function hex(bytes) { return Array.from(bytes).map(function (b) { return b.toString(16).padStart(2, "0"); }).join(""); }
  function unhex(h) { var a = new Uint8Array(h.length / 2); for (var i = 0; i < a.length; i++) a[i] = parseInt(h.substr(i * 2, 2), 16); return a; }
  function concat() {
    var total = 0, i; for (i = 0; i < arguments.length; i++) total += arguments[i].length;
    var r = new Uint8Array(total), at = 0;
    for (i = 0; i < arguments.length; i++) { r.set(arguments[i], at); at += arguments[i].length; }
    return r;
  }
  function sha256(bytes) { return crypto.subtle.digest("SHA-256", bytes).then(function (b) { return new Uint8Array(b); }); }
  // Python: json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
  function canonical(v) {
    if (v === null || typeof v !== "object") return JSON.stringify(v);
    if (Array.isArray(v)) return "[" + v.map(canonical).join(",") + "]";
    return "{" + Object.keys(v).sort(function (a, b) {
      var x = Array.from(a), y = Array.from(b);
      for (var i = 0; i < Math.min(x.length, y.length); i++) { var d = x[i].codePointAt(0) - y[i].codePointAt(0); if (d) return d; }
      return x.length - y.length;
    }).map(function (k) { return JSON.stringify(k) + ":" + canonical(v[k]); }).join(",") + "}";
  }
  function entryHash(prevHash, entry) { return sha256(concat(enc.encode(prevHash), enc.encode(canonical(entry)))).then(hex); }
  function leaf(h) { return sha256(concat(new Uint8Array([0]), unhex(h))); }
  function node(l, r) { return sha256(concat(new Uint8Array([1]), l, r)); }
  async function rootFromPath(h, path) {
    var running = await leaf(h);
    for (var i = 0; i < path.length; i++) {
      var step = path[i];
      if (!/^[0-9a-f]{64}$/.test(step.hash)) throw new Error("路径格式不对");
      var sib = unhex(step.hash);
      if (step.side === "left") running = await node(sib, running);
      else if (step.side === "right") running = await node(running, sib);
      else throw new Error("路径格式不对");
    }
    return hex(running);
  }
  function yuan(fen) { var s = fen < 0 ? "-" : ""; fen = Math.abs(fen); return s + Math.floor(fen / 100) + "." + String(fen % 100).padStart(2, "0"); }
  function el(tag, cls, text) { var e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; }

  async function verify(proof) {
    var lines = [], ok = true;
    if (!proof || !Array.isArray(proof.entries) || !proof.entries.length || typeof proof.roots !== "object") throw new Error("证明内容不完整");
    for (var i = 0; i < proof.entries.length; i++) {
      var item = proof.entries[i], e = item.entry;
      var sum = (e.postings || []).reduce(function (s, p) { return s + p.amount_fen; }, 0);
      var computed = await entryHash(item.prev_hash, e);
      var root = await rootFromPath(computed, item.path || []);
      var good = computed === item.hash && sum === 0 && root === item.root && proof.roots[e.day] === root;
      ok = ok && good;
      var amount = Math.max.apply(null, (e.postings || []).map(function (p) { return p.amount_fen; }));
      lines.push({good: good, text: e.day + " 第 " + e.seq + " 笔 · " + (KIND[e.kind] || e.kind) + " ¥" + yuan(amount)});
    }
    var days = Object.keys(proof.roots), published = [];
    for (var j = 0; j < days.length; j++) {
      var day = days[j];
      if (proof.published && proof.published[day]) {
        var res = await fetch("/api/v1/ledger/digests/" + day, {cache: "no-store"});
        var digest = res.ok ? await res.json() : null;
        var same = !!digest && digest.merkle_root === proof.roots[day];
        ok = ok && same;
        published.push({good: same, text: day + " 公布的 Merkle 根 " + (digest ? digest.merkle_root : "（取不到）") + (same ? " 一致" : " 不一致")});
      } else {
        published.push({good: true, text: day + " 的账目当天还没结束，次日公布 Merkle 根；当前算出的根 " + proof.roots[day]});
      }
    }
    return {ok: ok, lines: lines, published: published};
  }

  function show(result) {
    out.textContent = "";
    out.dataset.verified = String(result.ok);
    out.appendChild(el("p", result.ok ? "ok" : "bad", result.ok ? "✔ 验证通过：这笔捐赠的每一笔记账都在公开账本里，指纹和 Merkle 根都对得上。" : "✘ 验证没有通过：证明和账本对不上。"));
    var ul = el("ul");
    result.lines.concat(result.published).forEach(function (l) { var li = el("li", l.good ? "" : "bad"); li.appendChild(el("code", "", (l.good ? "✔ " : "✘ ") + l.text)); ul.appendChild(li); });
    out.appendChild(ul);
  }
  function fail(message) { out.textContent = ""; out.dataset.verified = "false"; out.appendChild(el("p", "bad", message)); }

  form.addEventListener("submit", async function (ev) {
    ev.preventDefault();
    if (!window.crypto || !crypto.subtle) { fail("这个浏览器不支持本地计算（需要 HTTPS），请换个浏览器。"); return; }
    out.dataset.verified = "";
    out.textContent = "正在计算…";
    var pasted = document.getElementById("proof-json").value.trim();
    var id = document.getElementById("donation-id").value.trim();
    try {
      var proof;
      if (pasted) proof = JSON.parse(pasted);
      else {
        if (!/^[0-9a-fA-F-]{32,36}$/.test(id)) { fail("请填写完整的捐赠编号。"); return; }
        var res = await fetch("/api/v1/donations/" + encodeURIComponent(id) + "/proof", {cache: "no-store"});
        if (res.status === 401 || res.status === 403) { fail("请在小程序“我的捐赠”里复制证明内容，粘贴到上面的框里。"); return; }
        if (!res.ok) { var body = await res.json().catch(function () { return {}; }); fail(body.message || "找不到这笔捐赠的证明。"); return; }
        proof = await res.json();
      }
      if (proof && proof.proof && typeof proof.proof === "object") proof = proof.proof;  // GET …/proof wraps it
      show(await verify(proof));
    } catch (err) {
      fail("证明内容有误：" + err.message);
    }
  });
})();
