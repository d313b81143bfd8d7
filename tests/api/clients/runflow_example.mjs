// sam3web's API called the way Runflow's SAM 3 model page calls Runflow, in Node.js (20+,
// its global fetch): the same POST (body and headers), then polling the run until it ends.
// Only the base URL and the key change:
//
//   SAM3WEB_BASE_URL=http://localhost:8000 SAM3WEB_API_KEY=sam3web_... node runflow_example.mjs
//
// SAM3WEB_IMAGE_URL and SAM3WEB_CALLBACK_URL replace the example's image and webhook;
// SAM3WEB_POLL_SECONDS the wait between polls (2 s, as Runflow's SDK). Prints the answer to the
// POST, then the run once it has ended, one JSON document a line; exits 0 when it succeeded.

const BASE_URL = process.env.SAM3WEB_BASE_URL.replace(/\/+$/, "");
const API_KEY = process.env.SAM3WEB_API_KEY;
const IMAGE_URL =
  process.env.SAM3WEB_IMAGE_URL ??
  "https://v3b.fal.media/files/b/0a92a995/fV5oYdcCV3NAmgWJISpIP_tmpdddcks4v.png";
const CALLBACK_URL = process.env.SAM3WEB_CALLBACK_URL ?? "https://your-server.com/webhook";
const POLL_SECONDS = Number(process.env.SAM3WEB_POLL_SECONDS ?? "2");

const response = await fetch(
  `${BASE_URL}/v1/models/meta/sam-3/image/runs`,
  {
    method: "POST",
    headers: {
      "Authorization": `Bearer ${API_KEY}`,
      "Content-Type": "application/json",
    },
    body: JSON.stringify({
        "input": {
            "prompt": "cat",
            "image_url": IMAGE_URL,
            "apply_mask": false,
            "return_multiple_masks": true
        },
        "callback_url": CALLBACK_URL,
        "metadata": {"client": "node"}
    }),
  }
);

const data = await response.json();
console.log(JSON.stringify(data));
if (response.status !== 201) process.exit(1);

const deadline = Date.now() + 180_000;
let run;
for (;;) {
  const polled = await fetch(`${BASE_URL}/v1/runs/${data.id}`, {
    headers: { "Authorization": `Bearer ${API_KEY}` },
  });
  run = await polled.json();
  if (["succeeded", "failed", "canceled"].includes(run.status_code)) break;
  if (Date.now() > deadline) {
    console.error("the run did not end within 180 s");
    process.exit(1);
  }
  await new Promise((resolve) => setTimeout(resolve, POLL_SECONDS * 1000));
}
console.log(JSON.stringify(run));
process.exit(run.status_code === "succeeded" ? 0 : 1);
