// Test oracle: OpenZeppelin's own StandardMerkleTree (@openzeppelin/merkle-tree), run with
// `node tests/oracle/oz_merkle.mjs < spec.json` from the project root.
//
// stdin, one tree:  {"types": ["uint8", ...], "values": [[...], ...], "mode": "full" | "time",
//                    "sortLeaves": true | false, "multiproofs": [[i, j, ...], ...]}
//   integers as decimal strings, bytes32 as 0x-prefixed hex; mode (default "full"), sortLeaves
//   (default true, OpenZeppelin's default) and multiproofs are optional.
//   A JSON array of such objects builds several trees in one run.
// stdout, one JSON line per input (an array for an array):
//   {"root": "0x..", "ms": <StandardMerkleTree.of milliseconds, leaf hashing included>,
//    "leaves": <count>, "proofs": [[..] for each value, in input order],
//    "tree": [the node array], "treeIndex": [array index of each value],
//    "multiproofs": [{"leaves": [leaf hashes], "proof": [..], "proofFlags": [..]}]}
//   mode "time" (the benchmark) builds only and prints root, ms and leaves.
import { StandardMerkleTree } from "@openzeppelin/merkle-tree";

const isInteger = (type) => /^u?int[0-9]*$/.test(type);

function run(spec) {
  const { types } = spec;
  const values = spec.values.map((row) =>
    row.map((value, i) => (isInteger(types[i]) ? BigInt(value) : value)),
  );

  const started = process.hrtime.bigint();
  const tree = StandardMerkleTree.of(values, types, { sortLeaves: spec.sortLeaves ?? true });
  const ms = Number(process.hrtime.bigint() - started) / 1e6;

  const out = { root: tree.root, ms, leaves: values.length };
  if ((spec.mode ?? "full") === "full") {
    const dump = tree.dump();
    out.proofs = values.map((_, i) => tree.getProof(i));
    out.tree = dump.tree;
    out.treeIndex = dump.values.map((v) => v.treeIndex);
    out.multiproofs = (spec.multiproofs ?? []).map((indices) => {
      const m = tree.getMultiProof(indices);
      return { leaves: m.leaves.map((v) => tree.leafHash(v)), proof: m.proof, proofFlags: m.proofFlags };
    });
  }
  return out;
}

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const input = JSON.parse(Buffer.concat(chunks).toString("utf8"));
const output = Array.isArray(input) ? input.map(run) : run(input);
process.stdout.write(JSON.stringify(output) + "\n");
