// Compiles against the package's declarations: the types say what the JSON holds.
import { Guard, verifyTemplate, verifyJson } from "../../guard-wasm/npm/pkg/node/sigil_guard";
import type { AssessmentInput, AssessmentOutput, Level, ObserveRequest, ObserveResponse } from "../../guard-wasm/npm/pkg/node/sigil_guard";

const guard: Guard = new Guard(undefined);
const input: AssessmentInput = { segments: [{ text: "hi", trust: "untrusted" }], context: { now: "2026-01-01T00:00:00Z" } };
const out: AssessmentOutput = JSON.parse(guard.assess(input));
const level: Level = out.assessment.level;
const rules: number = guard.ruleCount;
const report: string = verifyTemplate(new Uint8Array(), new Uint8Array(), new Uint8Array(), "rsassa-pss-sha256", undefined);
const verified: string = verifyJson("{}");
const guarded: string = guard.guardJson("{}");
const event: ObserveRequest = { profile: out.profile, now: "2026-01-01T00:01:00Z", content_level: "low" };
const observed: ObserveResponse = JSON.parse(guard.observeJson(JSON.stringify(event)));
const streak: number | undefined = observed.profile.streak;
const signal: string | undefined = observed.signals[0]?.id;
export { level, rules, report, verified, guarded, streak, signal };
