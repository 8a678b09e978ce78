// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

/// @title LedgerAnchor
/// @notice Anchors the sealed epochs of one Value OS ledger. Per epoch it stores one word: the
///         epoch header hash, which commits to the Merkle roots of the epoch's ENTRY and BALANCE
///         leaves. The roots travel in the calldata and in the `Anchored` event; the view
///         functions take the header fields, check them against the stored hash, and verify an
///         inclusion proof of a single leaf against the root they name.
/// @dev Formats (shared with the Python side, see contracts/README.md):
///      ENTRY leaf   = (uint8 1, bytes32 ledgerId, uint64 epoch, uint64 seq, uint64 operationId,
///                      uint64 accountId, bytes32 assetCode, int256 amount, int256 balanceAfter)
///      BALANCE leaf = (uint8 2, bytes32 ledgerId, uint64 epoch, uint64 seq, uint64 accountId,
///                      bytes32 assetCode, int256 balance, uint64 entryCount, bytes32 entriesHash)
///                     entryCount: the account's entries so far; entriesHash: their running hash
///                     h_i = keccak256(h_(i-1) ++ entryLeafHash_i) from bytes32(0)
///      leaf hash    = keccak256(bytes.concat(keccak256(abi.encode(leaf))))  (OZ StandardMerkleTree)
///      header       = keccak256(abi.encode(ledgerId, epoch, prevHeaderHash, entriesRoot,
///                      balancesRoot, firstSeq, lastSeq, leafCount))
///
///      A contract continues the header chain of an earlier one from `genesisEpoch` with header
///      `genesisHeader` (both zero for a new ledger): the first epoch it anchors is
///      `genesisEpoch + 1` and chains onto `genesisHeader`.
///
///      Storage invariant: `_headers[e] != 0` exactly for e in [genesisEpoch + 1, lastEpoch()].
///      `anchor` only accepts an epoch whose predecessor is anchored (or is the genesis) and which
///      is not anchored itself, so the anchored epochs always form one contiguous run. That is why
///      no `lastEpoch` counter is kept: it would cost a cold SLOAD plus an SSTORE on every anchor,
///      and `lastEpoch()` recovers it with an O(log N) search.
contract LedgerAnchor is AccessControl {
    /// @notice Role allowed to call {anchor}.
    bytes32 public constant ANCHOR_ROLE = keccak256("ANCHOR_ROLE");

    uint8 public constant ENTRY_LEAF_KIND = 1;
    uint8 public constant BALANCE_LEAF_KIND = 2;

    /// @notice The ledger this contract anchors; part of every leaf and header.
    bytes32 public immutable ledgerId;
    /// @notice The last epoch anchored before this contract (0 for a new ledger).
    uint64 public immutable genesisEpoch;
    /// @notice The header of `genesisEpoch` (zero for a new ledger).
    bytes32 public immutable genesisHeader;

    /// @notice The fields of an epoch header (the ledger id is this contract's).
    struct Header {
        uint64 epoch;
        bytes32 prevHeaderHash;
        bytes32 entriesRoot;
        bytes32 balancesRoot;
        uint64 firstSeq;
        uint64 lastSeq;
        uint64 leafCount;
    }

    mapping(uint64 epoch => bytes32 header) private _headers;

    /// @notice Every header field but the previous header, which is the `headerHash` of the
    ///         previous epoch's event (or `genesisHeader`): the events alone rebuild the chain.

    event Anchored(
        uint64 indexed epoch,
        bytes32 headerHash,
        bytes32 entriesRoot,
        bytes32 balancesRoot,
        uint64 firstSeq,
        uint64 lastSeq,
        uint64 leafCount
    );

    /// @notice `got` is not the next epoch to anchor (`expected`).
    error EpochOutOfOrder(uint64 expected, uint64 got);
    /// @notice `got` is not the stored header hash of the previous epoch (`expected`).
    error PrevHeaderMismatch(bytes32 expected, bytes32 got);
    error ZeroAdmin();
    /// @notice A continued chain needs both a genesis epoch and its header, a new one neither.
    error BadGenesis();

    constructor(bytes32 ledgerId_, address admin, uint64 genesisEpoch_, bytes32 genesisHeader_) {
        if (admin == address(0)) revert ZeroAdmin();
        if ((genesisEpoch_ == 0) != (genesisHeader_ == bytes32(0))) revert BadGenesis();
        ledgerId = ledgerId_;
        genesisEpoch = genesisEpoch_;
        genesisHeader = genesisHeader_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(ANCHOR_ROLE, admin);
    }

    /// @notice Anchors epoch `epoch`, which must directly follow the last anchored epoch (or the
    ///         genesis) and chain onto its header. An epoch can be anchored only once.
    function anchor(
        uint64 epoch,
        bytes32 prevHeaderHash,
        bytes32 entriesRoot,
        bytes32 balancesRoot,
        uint64 firstSeq,
        uint64 lastSeq,
        uint64 leafCount
    ) external onlyRole(ANCHOR_ROLE) {
        // Not yet anchored, and the predecessor is (or is the genesis): epoch == lastEpoch + 1.
        // Reading `_headers[epoch]` first only makes its SSTORE below warm, so the check is free.
        if (epoch <= genesisEpoch) revert EpochOutOfOrder(lastEpoch() + 1, epoch);
        bool first = epoch == genesisEpoch + 1;
        bytes32 expectedPrev = first ? genesisHeader : _headers[epoch - 1];
        if ((!first && expectedPrev == bytes32(0)) || _headers[epoch] != bytes32(0)) {
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
        _headers[epoch] = header;
        emit Anchored(epoch, header, entriesRoot, balancesRoot, firstSeq, lastSeq, leafCount);
    }

    /// @notice The header hash anchored for `epoch` (the genesis header for `genesisEpoch`),
    ///         zero if none.
    function headerOf(uint64 epoch) public view returns (bytes32) {
        if (epoch == genesisEpoch) return genesisHeader;
        return _headers[epoch];
    }

    /// @notice The highest anchored epoch (`genesisEpoch` if none since).
    /// @dev Galloping then binary search over the anchored run: at most ~2*log2(N) SLOADs.
    ///      Meant for off-chain reads; {anchor} never calls it except to build a revert reason.
    function lastEpoch() public view returns (uint64) {
        uint256 base = genesisEpoch;
        if (_headers[uint64(base + 1)] == bytes32(0)) return uint64(base);
        // Invariant: `base + lo` is anchored; `base + hi` is not (or is past the uint64 range).
        uint256 lo = 1;
        uint256 hi = 2;
        while (base + hi <= type(uint64).max && _headers[uint64(base + hi)] != bytes32(0)) {
            lo = hi;
            hi <<= 1;
        }
        while (hi - lo > 1) {
            uint256 mid = (lo + hi) >> 1;
            if (_headers[uint64(base + mid)] != bytes32(0)) lo = mid;
            else hi = mid;
        }
        return uint64(base + lo);
    }

    /// @notice The header hash the contract computes for these header fields.
    function headerHash(Header calldata h) public view returns (bytes32) {
        return keccak256(
            abi.encode(
                ledgerId,
                h.epoch,
                h.prevHeaderHash,
                h.entriesRoot,
                h.balancesRoot,
                h.firstSeq,
                h.lastSeq,
                h.leafCount
            )
        );
    }

    /// @notice True iff these header fields are exactly the ones anchored for `h.epoch`.
    function isAnchored(Header calldata h) public view returns (bool) {
        bytes32 stored = headerOf(h.epoch);
        return stored != bytes32(0) && stored == headerHash(h);
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
        int256 balance,
        uint64 entryCount,
        bytes32 entriesHash
    ) public view returns (bytes32) {
        return keccak256(
            bytes.concat(
                keccak256(
                    abi.encode(
                        BALANCE_LEAF_KIND,
                        ledgerId,
                        epoch,
                        seq,
                        accountId,
                        assetCode,
                        balance,
                        entryCount,
                        entriesHash
                    )
                )
            )
        );
    }

    /// @notice True iff `h` is the header anchored for `h.epoch` and `proof` proves this ENTRY of
    ///         that epoch against `h.entriesRoot`.
    function verifyEntry(
        Header calldata h,
        bytes32[] calldata proof,
        uint64 seq,
        uint64 operationId,
        uint64 accountId,
        bytes32 assetCode,
        int256 amount,
        int256 balanceAfter
    ) external view returns (bool) {
        // an unknown epoch, other header fields, or an epoch without entries
        if (!isAnchored(h) || h.entriesRoot == bytes32(0)) return false;
        bytes32 leaf =
            entryLeaf(h.epoch, seq, operationId, accountId, assetCode, amount, balanceAfter);
        return MerkleProof.verifyCalldata(proof, h.entriesRoot, leaf);
    }

    /// @notice True iff `h` is the header anchored for `h.epoch` and `proof` proves this BALANCE
    ///         of that epoch against `h.balancesRoot`.
    function verifyBalance(
        Header calldata h,
        bytes32[] calldata proof,
        uint64 seq,
        uint64 accountId,
        bytes32 assetCode,
        int256 balance,
        uint64 entryCount,
        bytes32 entriesHash
    ) external view returns (bool) {
        if (!isAnchored(h) || h.balancesRoot == bytes32(0)) return false;
        bytes32 leaf =
            balanceLeaf(h.epoch, seq, accountId, assetCode, balance, entryCount, entriesHash);
        return MerkleProof.verifyCalldata(proof, h.balancesRoot, leaf);
    }
}
