// Drives ComfyClient.mjs, as it is, through a base URL: upload an image, submit a graph that
// loads it, follow its progress over the client's websocket, poll /history, download the
// output. Prints one JSON object for tests/integration/test_comfy_client_js.py to check.
//
//   node run_comfy_client.mjs <ComfyClient.mjs> <base URL> <image.png> <graph.json>
//
// The graph's LoadImage names its image "<uploaded>"; the driver puts in what the upload answered,
// as an app would. `ws` comes from tests/node/node_modules (`make node`).
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { basename } from "node:path";
import { pathToFileURL } from "node:url";

const TIMEOUT_MS = 90_000;

globalThis.WebSocket = (await import("ws")).default;

const [clientPath, baseUrl, imagePath, graphPath] = process.argv.slice(2);
const { ComfyClient } = await import(pathToFileURL(clientPath).href);

function within(promise, what) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), TIMEOUT_MS);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

async function run() {
  const client = new ComfyClient(baseUrl);
  const image = new File([await readFile(imagePath)], basename(imagePath), { type: "image/png" });
  const upload = await client.uploadImage(image);

  const graph = JSON.parse(await readFile(graphPath, "utf8"));
  for (const node of Object.values(graph)) {
    if (node.inputs.image === "<uploaded>") {
      node.inputs.image = upload.subfolder ? `${upload.subfolder}/${upload.name}` : upload.name;
    }
  }

  // The socket first, as an app would, so that no event of the prompt is missed. ComfyUI sends
  // a prompt submitted without a client_id only its `progress` to every socket, not `executing`,
  // so the client's onComplete never fires for it: completion comes from polling /history.
  const progress = [];
  const ws = client.watchProgress(null, {
    onProgress: (value, max) => progress.push([value, max]),
  });
  await within(
    new Promise((resolve, reject) => {
      ws.addEventListener("open", resolve);
      ws.addEventListener("error", (e) => reject(new Error(`websocket ${ws.url}: ${e.message}`)));
    }),
    "the websocket to open",
  );

  const submitted = await client.submit(graph);
  if (!submitted.prompt_id) throw new Error(`submit answered ${JSON.stringify(submitted)}`);
  const job = await within(client.waitForCompletion(submitted.prompt_id, 200), "/history");
  // The last step's event was sent before the history entry was written, but may still be on
  // its way through the relay.
  await within(
    (async () => {
      while (!progress.some(([value, max]) => value === max)) {
        await new Promise((r) => setTimeout(r, 50));
      }
    })(),
    "the last progress event",
  );
  ws.close();
  const files = await client.getOutputFiles(submitted.prompt_id);
  const downloaded = [];
  for (const file of files) {
    const blob = await client.downloadFile(file.url);
    const bytes = Buffer.from(await blob.arrayBuffer());
    downloaded.push({
      size: bytes.length,
      type: blob.type,
      sha256: createHash("sha256").update(bytes).digest("hex"),
    });
  }
  return { upload, submitted, progress, status: job.status, files, downloaded };
}

// process.exit: a socket left open by a failure would keep Node running.
try {
  console.log(JSON.stringify(await run()));
  process.exit(0);
} catch (e) {
  console.log(JSON.stringify({ error: String(e?.stack ?? e) }));
  process.exit(1);
}
