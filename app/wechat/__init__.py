"""The only package that imports the WeChat SDKs (wechatpy for the mini-program server APIs,
wechatpayv3 for WeChat Pay). Everything else talks to the small interfaces defined here."""
