// Test oracle: OpenZeppelin's own StandardMerkleTree (@openzeppelin/merkle-tree).
//
// stdin:  {"types": ["uint8", ...], "values": [[...], ...], "mode": "full" | "time",
//          "multiproofs": [[i, j, ...], ...]}          (mode and multiproofs are optional)
//         integers as decimal strings, bytes32 as 0x-prefixed hex.
// stdout: {"root": "0x..", "ms": <build milliseconds>, "leaves": <count>,
//          "proofs": [[..] per value, in input order], "tree": [node array],
//          "treeIndex": [array index of each value], "multiproofs": [{leaves, proof, proofFlags}]}
//         mode "time" (for the benchmark) prints only root, ms and leaves.
import { StandardMerkleTree } from "@openzeppelin/merkle-tree";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const input = JSON.parse(Buffer.concat(chunks).toString("utf8"));
const { types } = input;
const mode = input.mode ?? "full";

const isInteger = (type) => /^u?int[0-9]*$/.test(type);
const values = input.values.map((row) =>
  row.map((value, i) => (isInteger(types[i]) ? BigInt(value) : value)),
);

const started = process.hrtime.bigint();
const tree = StandardMerkleTree.of(values, types);
const ms = Number(process.hrtime.bigint() - started) / 1e6;

const out = { root: tree.root, ms, leaves: values.length };
if (mode === "full") {
  const dump = tree.dump();
  out.proofs = values.map((_, i) => tree.getProof(i));
  out.tree = dump.tree;
  out.treeIndex = dump.values.map((v) => v.treeIndex);
  out.multiproofs = (input.multiproofs ?? []).map((indices) => {
    const m = tree.getMultiProof(indices);
    const hashes = m.leaves.map((leaf) => tree.leafHash(leaf));
    return { leaves: hashes, proof: m.proof, proofFlags: m.proofFlags };
  });
}
process.stdout.write(JSON.stringify(out) + "\n");
