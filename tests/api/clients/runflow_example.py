"""sam3web's API called the way Runflow's SAM 3 model page calls Runflow, in Python with
`requests`: the same POST (body and headers), then polling the run until it ends. Only the
base URL and the key change:

    SAM3WEB_BASE_URL=http://localhost:8000 SAM3WEB_API_KEY=sam3web_... \\
        python runflow_example.py

SAM3WEB_IMAGE_URL and SAM3WEB_CALLBACK_URL replace the example's image and webhook;
SAM3WEB_POLL_SECONDS the wait between polls (2 s, as Runflow's SDK). Prints the answer to the
POST, then the run once it has ended, one JSON document a line; exits 0 when it succeeded."""

import json
import os
import sys
import time

import requests

BASE_URL = os.environ["SAM3WEB_BASE_URL"].rstrip("/")
API_KEY = os.environ["SAM3WEB_API_KEY"]
IMAGE_URL = os.environ.get(
    "SAM3WEB_IMAGE_URL",
    "https://v3b.fal.media/files/b/0a92a995/fV5oYdcCV3NAmgWJISpIP_tmpdddcks4v.png",
)
CALLBACK_URL = os.environ.get("SAM3WEB_CALLBACK_URL", "https://your-server.com/webhook")
POLL_SECONDS = float(os.environ.get("SAM3WEB_POLL_SECONDS", "2"))

response = requests.post(
    f"{BASE_URL}/v1/models/meta/sam-3/image/runs",
    headers={"Authorization": f"Bearer {API_KEY}"},
    json={
        "input": {
            "prompt": "cat",
            "image_url": IMAGE_URL,
            "apply_mask": False,
            "return_multiple_masks": True,
        },
        "callback_url": CALLBACK_URL,
        "metadata": {"client": "python"},
    },
)

data = response.json()
print(json.dumps(data), flush=True)
if response.status_code != 201:
    sys.exit(1)

deadline = time.monotonic() + 180
while True:
    run = requests.get(
        f"{BASE_URL}/v1/runs/{data['id']}",
        headers={"Authorization": f"Bearer {API_KEY}"},
    ).json()
    if run["status_code"] in ("succeeded", "failed", "canceled"):
        break
    if time.monotonic() > deadline:
        sys.exit("the run did not end within 180 s")
    time.sleep(POLL_SECONDS)
print(json.dumps(run), flush=True)
sys.exit(0 if run["status_code"] == "succeeded" else 1)
