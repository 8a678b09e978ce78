// The independent oracle of the Stellar bridge's envelopes: the JavaScript @stellar/stellar-sdk
// 17 (its own XDR codec, hashing and ed25519) decodes each envelope the bridge persisted and
// reports what it finds. Input (stdin): {"passphrase": "...", "envelopes": ["<base64>", ...]}.
// Output (stdout): a JSON array, one object per envelope.
const sdk = require("@stellar/stellar-sdk");
const { xdr, Keypair, Address, TransactionBuilder, hash, scValToNative } = sdk;

const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
const networkId = hash(Buffer.from(input.passphrase));

function verifies(publicKey, data, signature) {
  try {
    return Keypair.fromPublicKey(publicKey).verify(Buffer.from(data), Buffer.from(signature));
  } catch (e) {
    return false;
  }
}

function hex(bytes) {
  return Buffer.from(bytes).toString("hex");
}

const out = input.envelopes.map((b64) => {
  const tx = TransactionBuilder.fromXDR(b64, input.passphrase);
  const txHash = tx.hash();
  const op = tx.operations[0];
  if (op.type !== "invokeHostFunction") throw new Error(`not a contract call: ${op.type}`);
  const fn = op.func.invokeContract;
  const auth = op.auth.map((entry) => {
    const creds = entry.credentials.address;
    const address = Address.fromScAddress(creds.address).toString();
    const preimage = xdr.HashIdPreimage.envelopeTypeSorobanAuthorization(
      new xdr.HashIdPreimageSorobanAuthorization({
        networkId,
        nonce: creds.nonce,
        signatureExpirationLedger: creds.signatureExpirationLedger,
        invocation: entry.rootInvocation,
      }),
    );
    const payload = hash(Buffer.from(preimage.toXdr()));
    const raw = Keypair.fromPublicKey(address).rawPublicKey();
    const sigs = scValToNative(creds.signature);
    const root = entry.rootInvocation.function.contractFn;
    return {
      address,
      nonce: creds.nonce.toString(),
      expiration: creds.signatureExpirationLedger,
      signed_by_address: sigs.some(
        (s) => hex(s.public_key) === hex(raw) && verifies(address, payload, s.signature),
      ),
      contract: Address.fromScAddress(root.contractAddress).toString(),
      function: Buffer.from(root.functionName.bytes).toString(),
      args_match_call: hex(root.toXdr()) === hex(fn.toXdr()),
    };
  });
  return {
    hash: hex(txHash),
    source: tx.source,
    sequence: tx.sequence,
    fee: tx.fee,
    max_time: tx.timeBounds ? tx.timeBounds.maxTime : null,
    signatures: tx.signatures.map((s) => ({
      hint: hex(s.hint.value),
      source_signed: verifies(tx.source, txHash, s.signature.value),
    })),
    contract: Address.fromScAddress(fn.contractAddress).toString(),
    function: Buffer.from(fn.functionName.bytes).toString(),
    args: fn.args.map((a) => {
      const v = scValToNative(a);
      return typeof v === "bigint" ? v.toString() : v;
    }),
    auth,
  };
});
process.stdout.write(JSON.stringify(out));
