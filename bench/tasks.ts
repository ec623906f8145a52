/** The processes the bench's cases run, shared with probe.ts: the same work measured two ways. */

export const WF_INPUTS = 300;
export const WF_TASKS = 600;
/** One workflow worker: tasks from..to by step, each reading 4 inputs (8-64 KiB) and writing one 16 KiB output. */
export const WF_WORKER = `const fs = require("fs"); const [inDir, outDir, from, to, step, n] = process.argv.slice(-6);
for (let t = +from; t < +to; t += +step) { for (let k = 0; k < 4; k++) fs.readFileSync(inDir + "/i" + ((t * 7 + k * 13) % +n));
  fs.writeFileSync(outDir + "/o" + t, Buffer.alloc(16384, t & 255)); }`;
/** Input i of a workflow: 8-64 KiB. */
export const wfInput = (i: number) => Buffer.alloc(8192 + ((i * 7919) % 57344), i & 255);

/** One of several writers: files d/p<from>..d/p<to - 1> of 4 KiB, each opened, written and closed. */
export const WRITER_SRC = `const fs = require("fs"); const [d, from, to] = process.argv.slice(-3); const b = Buffer.alloc(4096, 98);
for (let i = +from; i < +to; i++) { const fd = fs.openSync(d + "/p" + i, "w"); fs.writeSync(fd, b); fs.closeSync(fd); }`;
