#!/usr/bin/env bash
# sam3web's API called the way Runflow's SAM 3 model page calls Runflow, with curl: the same
# POST (body and headers, the body in a quoted heredoc), then polling the run until it ends.
# Only the base URL and the key change:
#
#   SAM3WEB_BASE_URL=http://localhost:8000 SAM3WEB_API_KEY=sam3web_... bash runflow_example.sh
#
# SAM3WEB_IMAGE_URL and SAM3WEB_CALLBACK_URL replace the example's image and webhook (put into
# the heredoc's placeholders by sed: a quoted heredoc expands nothing itself);
# SAM3WEB_POLL_SECONDS the wait between polls (2 s, as Runflow's SDK). Prints the answer to the
# POST, then the run once it has ended, one JSON document a line; exits 0 when it succeeded.
set -euo pipefail

base_url=${SAM3WEB_BASE_URL%/}
image_url=${SAM3WEB_IMAGE_URL:-https://v3b.fal.media/files/b/0a92a995/fV5oYdcCV3NAmgWJISpIP_tmpdddcks4v.png}
callback_url=${SAM3WEB_CALLBACK_URL:-https://your-server.com/webhook}
poll_seconds=${SAM3WEB_POLL_SECONDS:-2}

answer=$(
sed -e "s|@IMAGE_URL@|$image_url|" -e "s|@CALLBACK_URL@|$callback_url|" <<'JSON' |
{
    "input": {
        "prompt": "cat",
        "image_url": "@IMAGE_URL@",
        "apply_mask": false,
        "return_multiple_masks": true
    },
    "callback_url": "@CALLBACK_URL@",
    "metadata": {"client": "curl"}
}
JSON
curl -sS -X POST "$base_url/v1/models/meta/sam-3/image/runs" \
  -H "Authorization: Bearer $SAM3WEB_API_KEY" \
  -H "Content-Type: application/json" \
  --data-binary @- \
  -w '\n%{http_code}'
)
status=${answer##*$'\n'}
body=${answer%$'\n'*}
echo "$body"
[[ $status == 201 ]] || exit 1

# The run object's first field is its id: {"id": "…", ...}.
run_id=$(printf '%s' "$body" | grep -o '"id": *"[^"]*"' | head -n 1 | sed 's/.*"\([^"]*\)"$/\1/')
deadline=$((SECONDS + 180))
while :; do
  run=$(curl -sS "$base_url/v1/runs/$run_id" -H "Authorization: Bearer $SAM3WEB_API_KEY")
  code=$(printf '%s' "$run" | grep -o '"status_code": *"[a-z_]*"' | head -n 1 | sed 's/.*"\([a-z_]*\)"$/\1/')
  case $code in succeeded|failed|canceled) break ;; esac
  if (( SECONDS > deadline )); then echo "the run did not end within 180 s" >&2; exit 1; fi
  sleep "$poll_seconds"
done
echo "$run"
[[ $code == succeeded ]]
