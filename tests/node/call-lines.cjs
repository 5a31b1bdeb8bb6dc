// Reads JSON requests, one per line, on stdin, and answers each with the npm package, one per
// line, in order: `verify` lines go to verifyJson, `guard` lines to Guard.guardJson, `observe`
// lines to Guard.observeJson, `assess` lines to Guard.assessJson. A refusal is
// `{"error": {code, message}}`. The cross-face test compares these bytes with the other faces'.
"use strict";
const readline = require("node:readline");
const { Guard, verifyJson } = require("../../guard-wasm/npm/pkg");

const mode = process.argv[2];
const guard = new Guard();
const calls = {
  guard: (line) => guard.guardJson(line),
  observe: (line) => guard.observeJson(line),
  assess: (line) => guard.assessJson(line),
  verify: (line) => verifyJson(line),
};
const call = calls[mode] || calls.verify;
const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
const out = [];
rl.on("line", (line) => {
  try {
    out.push(call(line));
  } catch (e) {
    out.push(JSON.stringify({ error: { code: e.code || "exception", message: String(e.message) } }));
  }
});
rl.on("close", () => {
  process.stdout.write(out.join("\n") + "\n");
});
