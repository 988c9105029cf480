// Gaia console, terminal tab: a line-oriented shell over a WebSocket. Our own code; xterm.js
// (from npm, static/vendor) draws the terminal when it is installed, else a plain
// <pre> + <input> pair does. The server protocol is JSON (see gaia/console/pages/live.py):
// we send {"type": "run", "line": "..."}; it sends "ready", then "output" (stdout, stderr,
// exit_code) or "error" (message, fatal) for each line.
// The line editor lives here: printable keys echo, Backspace deletes, Enter sends the line,
// Ctrl-C drops it, Ctrl-L clears the screen, Up/Down walk the history. One line runs at a time;
// keys typed while it runs are ignored.
// Loaded inside the page body (htmx swaps bodies), so it may run more than once: each
// [data-terminal] element is set up once, and its socket is closed when the page is left.
(function () {
  "use strict";
  const VENDOR = "/console/static/vendor/";

  function load(src) {
    return new Promise(function (resolve, reject) {
      const script = document.createElement("script");
      script.src = VENDOR + src;
      script.onload = resolve;
      script.onerror = reject;
      document.head.appendChild(script);
    });
  }

  function vendor() {
    if (window.Terminal) { return Promise.resolve(); }
    return load("xterm.js").then(function () { return load("xterm-addon-fit.js"); });
  }

  function socketUrl(path) {
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
  }

  // ---- two screens with one interface: write(text), onKey(handler), focus()

  function xtermScreen(host) {
    const term = new window.Terminal({ convertEol: true, cursorBlink: true, fontSize: 14, scrollback: 5000 });
    let fit = null;
    if (window.FitAddon) {
      fit = new window.FitAddon.FitAddon();
      term.loadAddon(fit);
    }
    term.open(host);
    if (fit) { fit.fit(); window.addEventListener("resize", function () { fit.fit(); }); }
    return {
      write: function (text) { term.write(text); },
      clear: function () { term.clear(); },
      onData: function (handler) { term.onData(handler); },
      focus: function () { term.focus(); },
      dispose: function () { term.dispose(); },
    };
  }

  function plainScreen(host) {
    const out = document.createElement("pre");
    out.className = "log terminal-plain";
    out.setAttribute("aria-live", "polite");
    const label = document.createElement("label");
    label.textContent = "$ ";
    const input = document.createElement("input");
    input.className = "mono";
    input.size = 80;
    input.setAttribute("aria-label", host.getAttribute("aria-label") || "command");
    label.appendChild(input);
    host.appendChild(out);
    host.appendChild(label);
    let handler = null;
    input.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && handler) {
        const line = input.value;
        input.value = "";
        for (const ch of line) { handler(ch); }
        handler("\r");
        event.preventDefault();
      }
    });
    return {
      // the plain screen shows what was typed itself: drop the editor's echo and prompts
      write: function (text) {
        out.textContent += text.replace(/\u001b\[[0-9;]*[A-Za-z]/g, "").replace(/\r/g, "").replace(/\u0008 \u0008/g, "");
        out.scrollTop = out.scrollHeight;
      },
      clear: function () { out.textContent = ""; },
      onData: function (h) { handler = h; },
      focus: function () { input.focus(); },
      dispose: function () {},
      plain: true,
    };
  }

  // ---- the session

  function start(host) {
    const screen = window.Terminal ? xtermScreen(host) : plainScreen(host);
    const status = document.getElementById("terminal-status");
    const say = function (text) { if (status) { status.textContent = text; } };
    const history = [];
    let place = 0;
    let line = "";
    let busy = true;  // until "ready"
    let prompt = "$ ";

    const ws = new WebSocket(socketUrl(host.getAttribute("data-terminal")));
    host.gaiaSocket = ws;

    function showPrompt() { screen.write(prompt); }
    function replaceLine(text) {
      screen.write("\b \b".repeat(line.length));
      line = text;
      screen.write(line);
    }

    ws.onmessage = function (event) {
      let msg;
      try { msg = JSON.parse(event.data); } catch (e) { return; }
      if (msg.type === "ready") {
        prompt = msg.instance + " $ ";
        say(host.getAttribute("data-msg-connected").replace("{instance}", msg.instance));
      } else if (msg.type === "output") {
        if (msg.stdout) { screen.write(msg.stdout); }
        if (msg.stderr) { screen.write("\u001b[31m" + msg.stderr + "\u001b[0m"); }
        if (msg.exit_code) { screen.write("\u001b[33m[exit " + msg.exit_code + "]\u001b[0m\n"); }
      } else if (msg.type === "error") {
        screen.write("\u001b[31m" + host.getAttribute("data-msg-refused") + " " + msg.message + "\u001b[0m\n");
        if (msg.fatal) { say(host.getAttribute("data-msg-refused") + " " + msg.message); return; }
      }
      busy = false;
      showPrompt();
    };
    ws.onclose = function () {
      busy = true;
      screen.write("\n" + host.getAttribute("data-msg-closed") + "\n");
      if (!status || !status.textContent.startsWith(host.getAttribute("data-msg-refused"))) {
        say(host.getAttribute("data-msg-closed"));
      }
    };

    screen.onData(function (data) {
      if (busy) { return; }
      if (data.charAt(0) === "\u001b") {  // an escape sequence: only Up and Down mean something
        if (data === "\u001b[A" && place > 0) { place -= 1; replaceLine(history[place]); }
        if (data === "\u001b[B" && place < history.length) {
          place += 1;
          replaceLine(place < history.length ? history[place] : "");
        }
        return;
      }
      for (const ch of data) {
        if (ch === "\r") {
          screen.write("\r\n");
          if (line.trim()) { history.push(line); }
          place = history.length;
          busy = true;
          ws.send(JSON.stringify({ type: "run", line: line }));
          line = "";
          return;
        } else if (ch === "\u007f" || ch === "\b") {
          if (line.length) { line = line.slice(0, -1); screen.write("\b \b"); }
        } else if (ch === "\u0003") {  // Ctrl-C
          screen.write("^C\r\n");
          line = "";
          showPrompt();
        } else if (ch === "\u000c") {  // Ctrl-L
          screen.clear();
        } else if (ch >= " ") {
          line += ch;
          screen.write(ch);
        }
      }
    });
    screen.focus();
  }

  function scan(root) {
    root.querySelectorAll("[data-terminal]").forEach(function (host) {
      if (host.gaiaBound) { return; }
      host.gaiaBound = true;
      const ready = host.getAttribute("data-has-xterm") === "yes" ? vendor() : Promise.resolve();
      ready.catch(function () {}).then(function () { start(host); });
    });
  }

  function closeAll() {
    document.querySelectorAll("[data-terminal]").forEach(function (host) {
      if (host.gaiaSocket) { host.gaiaSocket.close(); host.gaiaSocket = null; }
    });
  }

  if (window.gaiaTerminal) { window.gaiaTerminal.scan(document); return; }
  document.addEventListener("htmx:beforeSwap", closeAll);
  window.addEventListener("pagehide", closeAll);
  window.gaiaTerminal = { scan: scan };
  scan(document);
})();
