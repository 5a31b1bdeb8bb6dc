// Times the npm package's verifyJson on each request file named on the command line: prints one
// line per file with the median of 31 batches, in microseconds per call.
"use strict";
const fs = require("node:fs");
const { verifyJson } = require("../../guard-wasm/npm/pkg");

for (const file of process.argv.slice(2)) {
  const request = fs.readFileSync(file, "utf8");
  verifyJson(request); // refusals throw: a bench over a refused request would time nothing useful
  let batch = 1;
  for (;;) {
    const t = process.hrtime.bigint();
    for (let i = 0; i < batch; i++) verifyJson(request);
    if (Number(process.hrtime.bigint() - t) > 20e6) break;
    batch *= 2;
  }
  const times = [];
  for (let s = 0; s < 31; s++) {
    const t = process.hrtime.bigint();
    for (let i = 0; i < batch; i++) verifyJson(request);
    times.push(Number(process.hrtime.bigint() - t) / batch / 1e3);
  }
  times.sort((a, b) => a - b);
  console.log(times[15].toFixed(1));
}
