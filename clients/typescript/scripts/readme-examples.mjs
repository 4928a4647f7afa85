// Extracts the ```ts blocks of README.md into readme-examples/ (not
// committed), each a module of its own, so `tsc --strict` checks the code
// the README shows against the package. Imports of "@slop-studios/client"
// point at the sources; what an example leaves to the app (showToast,
// reloadState, …) is declared in the prelude.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";

const here = new URL("../", import.meta.url);
const readme = readFileSync(new URL("README.md", here), "utf8");
const blocks = [...readme.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => m[1]);
if (blocks.length === 0) throw new Error("README.md has no ```ts block");
const prelude = `// Generated from README.md by scripts/readme-examples.mjs.
declare function reloadState(channel: string): void;
declare function showSignIn(): void;
declare function handle(event: import("../src/index.js").Event): void;
declare const localStorage: { getItem(key: string): string | null; setItem(key: string, value: string): void };
export {};
`;
const out = new URL("readme-examples/", here);
rmSync(out, { recursive: true, force: true });
mkdirSync(out);
blocks.forEach((code, i) => {
  const source = code
    .replaceAll('from "@slop-studios/client/node"', 'from "../src/node.js"')
    .replaceAll('from "@slop-studios/client"', 'from "../src/index.js"');
  writeFileSync(new URL(`example-${i + 1}.ts`, out), prelude + source);
});
console.log(`README.md: ${blocks.length} TypeScript examples extracted for tsc`);
