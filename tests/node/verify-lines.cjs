// Reads template verification requests (JSON), one per line, on stdin; writes the npm package's
// answer for each, one per line, in order: the report, or `{"error": {code, message}}`. The
// cross-face test compares these bytes with the other faces'.
"use strict";
const readline = require("node:readline");
const { verifyJson } = require("../../guard-wasm/npm/pkg");

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
const out = [];
rl.on("line", (line) => {
  try {
    out.push(verifyJson(line));
  } catch (e) {
    out.push(JSON.stringify({ error: { code: e.code || "exception", message: String(e.message) } }));
  }
});
rl.on("close", () => {
  process.stdout.write(out.join("\n") + "\n");
});
