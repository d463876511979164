// The Math Tutor flow through the official openai Node.js SDK; prints what it saw as JSON.
// Usage: THREADBUS_URL=http://127.0.0.1:8000/v1 node math_tutor.mjs
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.env.THREADBUS_URL, apiKey: process.env.THREADBUS_API_KEY, maxRetries: 0 });

const assistant = await client.beta.assistants.create({
  name: "Math Tutor",
  instructions: "You are a personal math tutor. Answer questions briefly, in a sentence or less.",
  model: "gpt-4o",
});
const thread = await client.beta.threads.create();
await client.beta.threads.messages.create(thread.id, {
  role: "user",
  content: "Node asks: I need to solve the equation `3x + 11 = 14`. Can you help me?",
});
const run = await client.beta.threads.runs.createAndPoll(
  thread.id,
  { assistant_id: assistant.id },
  { pollIntervalMs: 50 },
);
const messages = await client.beta.threads.messages.list(thread.id);
let missing = null;
try {
  await client.beta.assistants.retrieve("asst_missing");
} catch (error) {
  missing = { status: error.status, message: error.error?.message ?? error.message };
}
console.log(
  JSON.stringify({
    assistant: assistant.id,
    thread: thread.id,
    run: { id: run.id, status: run.status, usage: run.usage },
    messages: messages.data.map((m) => ({
      role: m.role,
      text: m.content[0].text.value,
      run_id: m.run_id,
    })),
    missing,
  }),
);
