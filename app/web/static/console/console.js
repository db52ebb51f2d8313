/* Sends the console's CSRF token with every form POST and every script request (sqladmin's delete). */
(function () {
  var meta = document.querySelector('meta[name="csrf-token"]');
  var token = meta ? meta.getAttribute('content') : '';
  if (!token) { return; }
  function addField(form) {
    if ((form.getAttribute('method') || 'get').toLowerCase() !== 'post') { return; }
    if (form.querySelector('input[name="csrf_token"]')) { return; }
    var input = document.createElement('input');
    input.type = 'hidden'; input.name = 'csrf_token'; input.value = token;
    form.appendChild(input);
  }
  function addAll() { Array.prototype.forEach.call(document.querySelectorAll('form'), addField); }
  if (document.readyState === 'loading') { document.addEventListener('DOMContentLoaded', addAll); } else { addAll(); }
  document.addEventListener('submit', function (e) { if (e.target && e.target.tagName === 'FORM') { addField(e.target); } }, true);
  if (window.jQuery) {
    window.jQuery.ajaxSetup({ headers: { 'X-CSRF-Token': token } });
  }
  var originalFetch = window.fetch;
  if (originalFetch) {
    window.fetch = function (input, init) {
      init = init || {};
      var headers = new Headers(init.headers || {});
      if (!headers.has('X-CSRF-Token')) { headers.set('X-CSRF-Token', token); }
      init.headers = headers;
      return originalFetch.call(this, input, init);
    };
  }
})();
