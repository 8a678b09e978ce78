// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

/// @title LedgerAnchor
/// @notice Anchors the sealed epochs of one Value OS ledger: per epoch it stores the epoch header
///         hash and the Merkle roots of the epoch's ENTRY and BALANCE leaves, and lets anyone verify
///         an inclusion proof of a single leaf against them.
/// @dev Formats (shared with the Python side, see contracts/README.md):
///      ENTRY leaf   = (uint8 1, bytes32 ledgerId, uint64 epoch, uint64 seq, uint64 operationId,
///                      uint64 accountId, bytes32 assetCode, int256 amount, int256 balanceAfter)
///      BALANCE leaf = (uint8 2, bytes32 ledgerId, uint64 epoch, uint64 seq, uint64 accountId,
///                      bytes32 assetCode, int256 balance)
///      leaf hash    = keccak256(bytes.concat(keccak256(abi.encode(leaf))))  (OZ StandardMerkleTree)
///      header       = keccak256(abi.encode(ledgerId, epoch, prevHeaderHash, entriesRoot,
///                      balancesRoot, firstSeq, lastSeq, leafCount))
///
///      Storage invariant: `_epochs[e].header != 0` exactly for e in [1, lastEpoch()]. `anchor` only
///      accepts an epoch whose predecessor is anchored (or epoch 1) and which is not anchored itself,
///      so the anchored epochs always form the prefix 1..N. That is why no separate `lastEpoch`
///      counter is kept: it would cost a cold SLOAD plus an SSTORE (~5,000 gas, 22,100 on the
///      first anchor) on every anchor, and `lastEpoch()` can recover it with an O(log N) search.
contract LedgerAnchor is AccessControl {
    /// @notice Role allowed to call {anchor}.
    bytes32 public constant ANCHOR_ROLE = keccak256("ANCHOR_ROLE");

    uint8 public constant ENTRY_LEAF_KIND = 1;
    uint8 public constant BALANCE_LEAF_KIND = 2;

    /// @notice The ledger this contract anchors; part of every leaf and header.
    bytes32 public immutable ledgerId;

    struct EpochRecord {
        bytes32 header;
        bytes32 entriesRoot;
        bytes32 balancesRoot;
    }

    /// @notice Per anchored epoch: header hash and both roots (all zero for an unknown epoch).
    mapping(uint64 epoch => EpochRecord) public epochs;

    event Anchored(
        uint64 indexed epoch, bytes32 headerHash, bytes32 entriesRoot, bytes32 balancesRoot
    );

    /// @notice `got` is not the next epoch to anchor (`expected`).
    error EpochOutOfOrder(uint64 expected, uint64 got);
    /// @notice `got` is not the stored header hash of the previous epoch (`expected`).
    error PrevHeaderMismatch(bytes32 expected, bytes32 got);
    error ZeroAdmin();

    constructor(bytes32 ledgerId_, address admin) {
        if (admin == address(0)) revert ZeroAdmin();
        ledgerId = ledgerId_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(ANCHOR_ROLE, admin);
    }

    /// @notice Anchors epoch `epoch`, which must directly follow the last anchored epoch and
    ///         chain onto its header. An epoch can be anchored only once.
    function anchor(
        uint64 epoch,
        bytes32 prevHeaderHash,
        bytes32 entriesRoot,
        bytes32 balancesRoot,
        uint64 firstSeq,
        uint64 lastSeq,
        uint64 leafCount
    ) external onlyRole(ANCHOR_ROLE) {
        EpochRecord storage record = epochs[epoch];
        // Not yet anchored, and the predecessor is (epoch 1 has none): epoch == lastEpoch + 1.
        // Reading `record.header` first only makes its SSTORE below warm, so the check is free.
        bytes32 expectedPrev;
        if (epoch > 1) expectedPrev = epochs[epoch - 1].header;
        if (epoch == 0 || (epoch > 1 && expectedPrev == bytes32(0)) || record.header != bytes32(0))
        {
            revert EpochOutOfOrder(lastEpoch() + 1, epoch);
        }
        if (prevHeaderHash != expectedPrev) revert PrevHeaderMismatch(expectedPrev, prevHeaderHash);

        bytes32 header = keccak256(
            abi.encode(
                ledgerId,
                epoch,
                prevHeaderHash,
                entriesRoot,
                balancesRoot,
                firstSeq,
                lastSeq,
                leafCount
            )
        );
        record.header = header;
        record.entriesRoot = entriesRoot;
        record.balancesRoot = balancesRoot;
        emit Anchored(epoch, header, entriesRoot, balancesRoot);
    }

    /// @notice The highest anchored epoch, 0 if none.
    /// @dev Galloping then binary search over the anchored prefix: at most ~2*log2(N) SLOADs.
    ///      Meant for off-chain reads; {anchor} never calls it except to build a revert reason.
    function lastEpoch() public view returns (uint64) {
        if (epochs[1].header == bytes32(0)) return 0;
        // Invariant: `lo` is anchored; `hi` is not (or is past the uint64 range).
        uint256 lo = 1;
        uint256 hi = 2;
        while (hi <= type(uint64).max && epochs[uint64(hi)].header != bytes32(0)) {
            lo = hi;
            hi <<= 1;
        }
        while (hi - lo > 1) {
            uint256 mid = (lo + hi) >> 1;
            if (epochs[uint64(mid)].header != bytes32(0)) lo = mid;
            else hi = mid;
        }
        return uint64(lo);
    }

    /// @notice The header hash the contract computes for these header fields.
    function headerHash(
        uint64 epoch,
        bytes32 prevHeaderHash,
        bytes32 entriesRoot,
        bytes32 balancesRoot,
        uint64 firstSeq,
        uint64 lastSeq,
        uint64 leafCount
    ) external view returns (bytes32) {
        return keccak256(
            abi.encode(
                ledgerId,
                epoch,
                prevHeaderHash,
                entriesRoot,
                balancesRoot,
                firstSeq,
                lastSeq,
                leafCount
            )
        );
    }

    /// @notice The Merkle leaf hash of an ENTRY of this ledger.
    function entryLeaf(
        uint64 epoch,
        uint64 seq,
        uint64 operationId,
        uint64 accountId,
        bytes32 assetCode,
        int256 amount,
        int256 balanceAfter
    ) public view returns (bytes32) {
        return keccak256(
            bytes.concat(
                keccak256(
                    abi.encode(
                        ENTRY_LEAF_KIND,
                        ledgerId,
                        epoch,
                        seq,
                        operationId,
                        accountId,
                        assetCode,
                        amount,
                        balanceAfter
                    )
                )
            )
        );
    }

    /// @notice The Merkle leaf hash of a BALANCE of this ledger.
    function balanceLeaf(
        uint64 epoch,
        uint64 seq,
        uint64 accountId,
        bytes32 assetCode,
        int256 balance
    ) public view returns (bytes32) {
        return keccak256(
            bytes.concat(
                keccak256(
                    abi.encode(BALANCE_LEAF_KIND, ledgerId, epoch, seq, accountId, assetCode, balance)
                )
            )
        );
    }

    /// @notice True iff `proof` proves this ENTRY against the entries root of anchored `epoch`.
    function verifyEntry(
        bytes32[] calldata proof,
        uint64 epoch,
        uint64 seq,
        uint64 operationId,
        uint64 accountId,
        bytes32 assetCode,
        int256 amount,
        int256 balanceAfter
    ) external view returns (bool) {
        bytes32 root = epochs[epoch].entriesRoot;
        if (root == bytes32(0)) return false; // unknown epoch, or an epoch without entries
        bytes32 leaf =
            entryLeaf(epoch, seq, operationId, accountId, assetCode, amount, balanceAfter);
        return MerkleProof.verifyCalldata(proof, root, leaf);
    }

    /// @notice True iff `proof` proves this BALANCE against the balances root of anchored `epoch`.
    function verifyBalance(
        bytes32[] calldata proof,
        uint64 epoch,
        uint64 seq,
        uint64 accountId,
        bytes32 assetCode,
        int256 balance
    ) external view returns (bool) {
        bytes32 root = epochs[epoch].balancesRoot;
        if (root == bytes32(0)) return false; // unknown epoch, or an epoch without balances
        return MerkleProof.verifyCalldata(
            proof, root, balanceLeaf(epoch, seq, accountId, assetCode, balance)
        );
    }
}
