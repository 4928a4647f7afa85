// Runs the JavaScript client a document shows, exactly as written there,
// against a real server, for tests/e2e/doc_clients.rs.
//
//   node --experimental-websocket doc-client.mjs <file.md> <heading>
//
// The first ```js block after <heading> runs with browser-like globals:
// `WebSocket` connects to SLOP_WS_URL whatever URL the code names,
// `currentToken()` is SLOP_TOKEN, and what the client does for its app
// (handle, showToast, updateProgress, reloadState, reloadNotifications,
// signInAgain) is printed to stdout as one JSON object a line, with the
// frames each socket receives and its closes. A line "drop" on stdin closes
// the newest socket, as a network failure would; with SLOP_DROP_ON_WELCOME
// set, the first socket is dropped as soon as its welcome arrives. With
// SLOP_UNAVAILABLE_AFTER_WELCOME set, every socket ends as the server ends
// one whose own channel cannot be followed (Redis down): `welcome`, then at
// once close 1013, no frame in between.
// Reconnect delays are fixed at 300 ms, so a test does not wait for
// back-off; the delay the client asked for is printed ({wait: ms}), with
// Math.random() fixed at 0.5 so the back-off it asks for is half its cap.
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";

const [doc, heading] = process.argv.slice(2);
const text = readFileSync(doc, "utf8");
const at = text.indexOf(heading);
if (at < 0) throw new Error(`no heading ${heading} in ${doc}`);
const block = /```js\n([\s\S]*?)```/.exec(text.slice(at));
if (!block) throw new Error(`no js block after ${heading} in ${doc}`);

const out = (line) => process.stdout.write(JSON.stringify(line) + "\n");
const sockets = [];
let dropOnWelcome = Boolean(process.env.SLOP_DROP_ON_WELCOME);
const unavailable = Boolean(process.env.SLOP_UNAVAILABLE_AFTER_WELCOME);
const TRY_AGAIN_LATER = { code: 1013, reason: "unavailable; try again later" };

class TestWebSocket extends WebSocket {
  // Whether this socket has said welcome and is to end as unavailable.
  #unavailable = false;

  constructor(_url) {
    super(process.env.SLOP_WS_URL);
    sockets.push(this);
    // Registered before the client's own handler, so it sees each frame first.
    this.addEventListener("message", ({ data }) => {
      const frame = JSON.parse(data);
      if (this.#unavailable) return;
      out({ frame: frame.type, id: frame.id ?? null });
      if (frame.type === "welcome" && (dropOnWelcome || unavailable)) {
        dropOnWelcome = false;
        this.#unavailable = unavailable;
        this.close();
      }
    });
    this.addEventListener("close", ({ code }) =>
      out({ closed: this.#unavailable ? TRY_AGAIN_LATER.code : code }),
    );
  }

  // The client's handlers see what the server would send: nothing after
  // the welcome of an unavailable socket, then its 1013.
  get onmessage() {
    return super.onmessage;
  }
  set onmessage(handler) {
    super.onmessage = (event) => {
      if (!this.#unavailable || JSON.parse(event.data).type === "welcome") handler(event);
    };
  }
  get onclose() {
    return super.onclose;
  }
  set onclose(handler) {
    super.onclose = (event) => handler(this.#unavailable ? TRY_AGAIN_LATER : event);
  }
}

const globals = {
  WebSocket: TestWebSocket,
  currentToken: () => process.env.SLOP_TOKEN,
  handle: (event) => out({ handled: event }),
  showToast: (toast) => out({ toast }),
  updateProgress: (jobId, percent) => out({ progress: { jobId, percent } }),
  reloadState: (channel) => out({ reload: channel ?? null }),
  reloadNotifications: () => out({ reload: null }),
  signInAgain: () => out({ signInAgain: true }),
  setTimeout: (callback, ms) => {
    out({ wait: ms ?? 0 });
    return setTimeout(callback, 300);
  },
  Math: Object.assign(Object.create(Math), { random: () => 0.5 }),
  console,
};

createInterface({ input: process.stdin }).on("line", (line) => {
  if (line === "drop") sockets.at(-1)?.close();
});
process.stdin.on("end", () => process.exit(0));

new Function(...Object.keys(globals), block[1])(...Object.values(globals));
