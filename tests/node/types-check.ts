// Compiles against the package's declarations: the types say what the JSON holds.
import { Guard, verifyTemplate, verifyJson } from "../../guard-wasm/npm/pkg/node/sigil_guard";
import type { AssessmentInput, AssessmentOutput, Level } from "../../guard-wasm/npm/pkg/node/sigil_guard";

const guard: Guard = new Guard(undefined);
const input: AssessmentInput = { segments: [{ text: "hi", trust: "untrusted" }], context: { now: "2026-01-01T00:00:00Z" } };
const out: AssessmentOutput = JSON.parse(guard.assess(input));
const level: Level = out.assessment.level;
const rules: number = guard.ruleCount;
const report: string = verifyTemplate(new Uint8Array(), new Uint8Array(), new Uint8Array(), "rsassa-pss-sha256", undefined);
const verified: string = verifyJson("{}");
const guarded: string = guard.guardJson("{}");
export { level, rules, report, verified, guarded };
