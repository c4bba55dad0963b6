"""The handout page (Jinja2, autoescaped) and its CSS: A4 for WeasyPrint's PDF, one <section> per attendee with
a page break after each, and the same markup as a readable page in a browser."""
from __future__ import annotations

CSS = """
@page { size: A4; margin: 13mm 14mm 12mm 14mm; }
* { box-sizing: border-box; }
body { font-family: "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; font-size: 9.5pt; color: #1d1d1f;
       line-height: 1.35; margin: 0; }
code, pre { font-family: "DejaVu Sans Mono", "Menlo", "Consolas", monospace; font-variant-ligatures: none; }
section.page { break-after: page; }
section.page:last-child { break-after: auto; }
.screen section.page { max-width: 190mm; margin: 8mm auto; padding: 10mm 12mm; border: 1px solid #ddd;
                       border-radius: 2mm; background: #fff; }
.screen { background: #f2f2f4; }
.kicker { font-size: 8.5pt; letter-spacing: 0.06em; text-transform: uppercase; color: #6b6b70; }
h1 { font-size: 20pt; margin: 1mm 0 0.5mm 0; }
.who { color: #4a4a4f; margin-bottom: 4mm; }
table.top { width: 100%; border-collapse: collapse; }
table.top td { vertical-align: top; padding: 0; }
td.qr { width: 50mm; text-align: center; padding-left: 4mm; }
td.qr img { width: 46mm; height: 46mm; display: block; margin: 0 auto; }
table.key { width: 100%; border-collapse: collapse; margin-top: 3mm; }
table.key td { vertical-align: middle; padding: 0; }
table.key .keybox { margin-top: 0; }
td.chatqr { width: 50mm; padding-left: 4mm; }
td.chatqr img { width: 22mm; height: 22mm; float: left; margin-right: 2mm; }
.cap { font-size: 7.5pt; color: #5a5a60; margin-top: 1mm; }
table.kv { border-collapse: collapse; width: 100%; }
table.kv th { text-align: left; font-weight: normal; color: #5a5a60; width: 30mm; padding: 1.2mm 2mm 1.2mm 0;
              vertical-align: top; white-space: nowrap; }
table.kv td { padding: 1.2mm 0; border-bottom: 0.2mm solid #e4e4e8; word-break: break-all; }
table.kv code { font-size: 9.5pt; }
.keybox { margin-top: 3mm; padding: 2.2mm 3mm; background: #fff6d5; border: 0.3mm solid #ecd58a; border-radius: 1mm; }
.keybox .label { display: block; font-size: 8pt; color: #6b5a1e; text-transform: uppercase; letter-spacing: 0.06em; }
code.key { font-size: 12pt; font-weight: bold; white-space: nowrap; }
p.smoke { margin: 3mm 0 0 0; padding: 1.6mm 2.5mm; border-radius: 1mm; font-weight: bold; }
p.smoke.ok { background: #e3f4e8; color: #0b5d26; }
p.smoke.warn { background: #fff1d6; color: #7a4b00; }
p.smoke.bad, p.smoke.unknown { background: #eeeef2; color: #4a4a4f; }
p.ca { margin: 2mm 0 0 0; font-size: 8.5pt; color: #4a4a4f; }
h2 { font-size: 10.5pt; margin: 4.5mm 0 1.2mm 0; }
h2 .hint { font-weight: normal; color: #6b6b70; font-size: 8.5pt; }
pre { font-size: 8.6pt; line-height: 1.3; background: #f5f5f7; border: 0.25mm solid #dcdce0; border-radius: 1mm;
      padding: 2mm 2.5mm; margin: 0; white-space: pre-wrap; word-break: break-all; }
/* Four snippets (an Xinference stack): smaller code and gaps, so the page still fits one A4 sheet. */
section.dense pre { font-size: 7.2pt; line-height: 1.15; padding: 1.2mm 2mm; }
section.dense h2 { font-size: 9.5pt; margin: 2.2mm 0 0.6mm 0; }
section.dense .keybox { margin-top: 2mm; }
section.dense .who { margin-bottom: 2mm; }
section.dense td.qr img { width: 40mm; height: 40mm; }
section.dense footer { margin-top: 3mm; }
footer { margin-top: 5mm; padding-top: 2mm; border-top: 0.25mm solid #dcdce0; font-size: 7.5pt; color: #6b6b70; }
footer b { color: #1d1d1f; }
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}{% if pages|length == 1 %}: {{ pages[0].a.name }}{% endif %}</title>
<style>{{ css|safe }}</style>
</head>
<body class="{{ 'print' if for_print else 'screen' }}">
{% for p in pages %}
<section class="page{{ ' dense' if p.snippets|length > 3 }}" id="{{ p.a.id }}">
  <div class="kicker">{{ p.title }}</div>
  <h1>{{ p.a.name }}</h1>
  <div class="who">attendee <b>{{ p.a.id }}</b>{% if p.a.email %} &middot; {{ p.a.email }}{% endif %}</div>
  <table class="top"><tr>
    <td>
      <table class="kv">
        <tr><th>Endpoint</th><td><code>{{ p.a.endpoint_url }}</code></td></tr>
        <tr><th>OpenAI base URL</th><td><code>{{ p.a.openai_base_url }}</code></td></tr>
        <tr><th>Model</th><td><code>{{ p.a.model }}</code></td></tr>
        {% if p.a.chat_url %}
        <tr><th>Chat in the browser</th><td><code>{{ p.a.chat_url }}</code> (sign in with your API key)</td></tr>
        {% endif %}
        <tr><th>Served by</th><td>{% if p.a.shared %}shared endpoint {{ p.a.endpoint }}
          (your key has its own rate limit){% else %}your own VM{% endif %}</td></tr>
      </table>
      <p class="smoke {{ p.smoke_class }}">{{ p.smoke }}</p>
      {% if p.ca %}
      <p class="ca">This endpoint has {{ p.ca_reason }}. Save the CA file as
        <code>{{ p.ca_name }}</code> next to your code{% if for_print %} (it comes with this page){% else %}:
        <a download="{{ p.ca_name }}" href="{{ p.ca_data_uri }}">download {{ p.ca_name }}</a>{% endif %}.
        The snippets below trust it.</p>
      {% endif %}
    </td>
    <td class="qr">
      <img src="{{ p.qr }}" alt="QR code: the base URL, API key and model as export lines">
      <div class="cap">Scan for the base URL, key and model as three <code>export</code> lines
        (a terminal or a .env file)</div>
    </td>
  </tr></table>
  {% if p.chat_qr %}
  <table class="key"><tr>
    <td><div class="keybox"><span class="label">Your API key</span><code class="key">{{ p.a.api_key }}</code></div></td>
    <td class="chatqr"><img src="{{ p.chat_qr }}" alt="QR code: the chat's sign-in page">
      <div class="cap">Scan to open the chat in a browser, then paste your key there</div></td>
  </tr></table>
  {% else %}
  <div class="keybox"><span class="label">Your API key</span><code class="key">{{ p.a.api_key }}</code></div>
  {% endif %}

  <h2>1 &middot; curl <span class="hint">in a terminal</span></h2>
  <pre>{{ p.snippets.curl }}</pre>
  <h2>2 &middot; OpenAI Python client <span class="hint">pip install openai</span></h2>
  <pre>{{ p.snippets.openai }}</pre>
  <h2>3 &middot; BioChatter <span class="hint">pip install biochatter; base_url is the OpenAI base URL above</span></h2>
  <pre>{{ p.snippets.biochatter }}</pre>
  {% if "xinference" in p.snippets %}
  <h2>4 &middot; Xinference's client <span class="hint">pip install xinference-client; launching models needs an
    admin key</span></h2>
  <pre>{{ p.snippets.xinference }}</pre>
  {% endif %}

  <footer><b>Keep this page to yourself:</b> the key is yours alone, and it stops working when the workshop ends.
    Stack {{ p.stack }} &middot; generated {{ p.generated }} by llmdeploy.</footer>
</section>
{% endfor %}
</body>
</html>
"""
