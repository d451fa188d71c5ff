// The AI SDK's own client code resuming a chat from `pgbridge serve`: run by
// tests/acceptance/test_ai_sdk_client.py, which produces the chat's responses
// in Python and kills and restarts the server; this side uses only the `ai`
// package's public API.
//
//   node resume.mjs <ai5|ai6|ai7> <mode> <server url> <chat id>
//
// Modes:
//   transport   DefaultChatTransport.reconnectToStream + readUIMessageStream
//               (the reconnect path of useChat, at the protocol level)
//   chat        an AbstractChat subclass's resumeStream(): the code path of
//               useChat({ resume: true }) on mount. On an error (the server
//               went away) it "reloads": a new chat, resumeStream() again,
//               up to RESUME_ATTEMPTS times.
//   twice       two pages of one chat resume at once, one of them calling
//               resumeStream() twice at once (React StrictMode mounts twice)
//
// Every line of stdout is one JSON object: {"event": "chunk", "page", "chunk"} as each
// chunk arrives (so the test can act mid-response), then the outcome. The
// bearer token comes from PGBRIDGE_TOKEN.

const [packageName, mode, serverUrl, chatId] = process.argv.slice(2);
const ai = await import(packageName);
const { AbstractChat, DefaultChatTransport, readUIMessageStream } = ai;

const token = process.env.PGBRIDGE_TOKEN;
const headers = token ? { Authorization: `Bearer ${token}` } : {};
const attempts = Number(process.env.RESUME_ATTEMPTS ?? "1");
const pauseMs = Number(process.env.RESUME_PAUSE_MS ?? "200");
// What the page loaded from the app's own storage: the user's message (the
// assistant's answer in progress is what the resume brings).
const userMessage = { id: "user-1", role: "user", parts: [{ type: "text", text: "hello" }] };

function report(event) {
  process.stdout.write(JSON.stringify(event) + "\n");
}

function describe(error) {
  return error == null ? null : { name: error.name ?? null, message: String(error.message ?? error) };
}

// The transport useChat uses, its chunks reported as they are parsed. The
// default reconnect URL is `${api}/${chatId}/stream`: api is the server's /chat.
class ReportingTransport extends DefaultChatTransport {
  constructor(page, options) {
    super(options);
    this.page = page;
  }
  processResponseStream(stream) {
    const page = this.page;
    return super.processResponseStream(stream).pipeThrough(
      new TransformStream({
        transform(chunk, controller) {
          report({ event: "chunk", page, chunk });
          controller.enqueue(chunk);
        },
      }),
    );
  }
}

function transport(page = "a") {
  return new ReportingTransport(page, { api: `${serverUrl}/chat`, headers });
}

// An in-memory ChatState, as the framework bindings keep theirs.
class MemoryState {
  constructor(messages) {
    this.messages = messages;
    this.status = "ready";
    this.error = undefined;
  }
  pushMessage = (message) => {
    this.messages = this.messages.concat(message);
  };
  popMessage = () => {
    this.messages = this.messages.slice(0, -1);
  };
  replaceMessage = (index, message) => {
    this.messages = [...this.messages.slice(0, index), this.snapshot(message), ...this.messages.slice(index + 1)];
  };
  snapshot = (thing) => structuredClone(thing);
}

class TestChat extends AbstractChat {
  constructor(page = "a") {
    super({ id: chatId, transport: transport(page), state: new MemoryState([structuredClone(userMessage)]) });
  }
}

function chatOutcome(chat) {
  return { status: chat.status, error: describe(chat.error), messages: chat.messages };
}

async function viaTransport() {
  const stream = await transport().reconnectToStream({ chatId });
  if (stream == null) {
    report({ event: "outcome", status: 204 });
    return;
  }
  let message = null;
  for await (const snapshot of readUIMessageStream({ stream, terminateOnError: true })) {
    message = snapshot;
  }
  report({ event: "outcome", status: 200, message });
}

async function viaChat() {
  for (let attempt = 1; ; attempt++) {
    const chat = new TestChat(); // a page load: nothing of the previous one is kept
    await chat.resumeStream();
    const outcome = { event: "outcome", attempt, ...chatOutcome(chat) };
    if (chat.status !== "error" || attempt >= attempts) {
      report(outcome);
      return;
    }
    report({ ...outcome, event: "attempt" });
    await new Promise((resolve) => setTimeout(resolve, pauseMs));
  }
}

async function viaTwoPages() {
  const [a, b] = [new TestChat("a"), new TestChat("b")];
  await Promise.all([a.resumeStream(), a.resumeStream(), b.resumeStream()]);
  report({ event: "outcome", pages: { a: chatOutcome(a), b: chatOutcome(b) } });
}

const modes = { transport: viaTransport, chat: viaChat, twice: viaTwoPages };
try {
  await modes[mode]();
} catch (error) {
  report({ event: "failure", error: describe(error) });
  process.exitCode = 1;
}
