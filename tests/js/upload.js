// Upload one file with tus-js-client (Node), as a phone app would. Prints one JSON line.
// usage: node upload.js <endpoint> <token> <file> <id> <sha256> <chunkSize> [stopAfterBytes] [uploadUrl]
"use strict";
const fs = require("fs");
const tus = require("tus-js-client");

const [endpoint, token, path, id, sha256, chunkSize, stopAfter, uploadUrl] = process.argv.slice(2);
const upload = new tus.Upload(fs.readFileSync(path), {
  endpoint,
  uploadUrl: uploadUrl || null,
  headers: { Authorization: `Bearer ${token}` },
  chunkSize: Number(chunkSize),
  // tus-js-client has no checksum extension: the end-to-end sha256 travels in the metadata.
  metadata: { id, filename: "from-js.jpg", filetype: "image/jpeg", sha256 },
  retryDelays: null,
  storeFingerprintForResuming: false,
  onChunkComplete(_chunk, sent) {
    if (stopAfter && Number(stopAfter) > 0 && sent >= Number(stopAfter)) {
      upload.abort().then(() => {
        console.log(JSON.stringify({ aborted: sent, url: upload.url }));
        process.exit(0);
      });
    }
  },
  onSuccess() {
    console.log(JSON.stringify({ done: true, url: upload.url }));
  },
  onError(error) {
    console.error(String(error));
    process.exit(1);
  },
});
upload.start();
