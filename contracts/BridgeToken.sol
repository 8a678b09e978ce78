// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";

/// @title BridgeToken
/// @notice The ERC-20 side of a Value OS bridge: a minter mints against a ledger debit (each
///         `bridgeId` once), holders burn with {redeem} to be credited back on the ledger.
/// @dev Defaults refuse. The constructor grants only `DEFAULT_ADMIN_ROLE` (to `admin`); nobody can
///      mint or pause until the admin grants `MINTER_ROLE` / `PAUSER_ROLE` explicitly, and a zero
///      `perTransferCap`, `windowCap` or `windowSeconds` blocks every mint.
///
///      Rate limit: a token bucket of size `windowCap` that refills linearly at
///      `windowCap / windowSeconds` tokens per second (the CCIP rate limiter's shape). It is kept
///      as `tokens` (what was available at `updatedAt`, the timestamp of the last mint or cap
///      change). At time `t`:
///
///          elapsed   = t - updatedAt
///          tokensNow = elapsed >= windowSeconds ? windowCap
///                    : min(windowCap, tokens + floor(elapsed * windowCap / windowSeconds))
///          available = windowSeconds == 0 ? 0 : tokensNow
///
///      A mint of `amount` needs `amount <= available`; it then stores `tokens = tokensNow -
///      amount`, `updatedAt = t` (a batch stores once, after all its items). So at most
///      `windowCap` can be minted at once, and after that only what has refilled since; a whole
///      `windowSeconds` without a mint makes the full `windowCap` available again. The refill is
///      rounded down at every update: never faster than the linear rate, slower by under one base
///      unit per update. The bucket starts full.
///
///      {setCaps} keeps what was drained: with `used = oldWindowCap - tokensNow` (under the old
///      caps) it stores `tokens = max(0, newWindowCap - used)`, `updatedAt = t`. Raising
///      `windowCap` by d makes d more available at once, lowering it by d makes d less (not below
///      zero); the new rate applies from `t`.
///
///      {pause} stops {mint}, {mintBatch} and {redeem} only; transfers and permits go on.
contract BridgeToken is ERC20, ERC20Permit, AccessControl, Pausable {
    /// @notice Role allowed to call {mint} and {mintBatch}.
    bytes32 public constant MINTER_ROLE = keccak256("MINTER_ROLE");
    /// @notice Role allowed to call {pause} and {unpause}.
    bytes32 public constant PAUSER_ROLE = keccak256("PAUSER_ROLE");

    uint8 private immutable _decimals;

    // Packed with Pausable's `_paused` flag (declared just before, in the inherited layout): the
    // whenNotPaused check makes this slot warm for the window update of every mint.
    /// @notice Length of the rate-limit window: the bucket refills fully in this many seconds.
    uint64 public windowSeconds;
    uint64 private _windowUpdatedAt;
    /// @notice The largest amount a single mint (or a single item of a batch) may have.
    uint256 public perTransferCap;
    /// @notice The bucket size: the most that can be minted at once after a full window.
    uint256 public windowCap;
    // What the bucket held at `_windowUpdatedAt`. Kept as the tokens left rather than the tokens
    // used: it is usually non-zero, so a mint rewrites a non-zero slot (2,900 gas), not a zero one
    // (20,000) as a drained-amount counter would after every idle refill.
    uint256 private _windowTokens;

    mapping(bytes32 bridgeId => bool) private _minted;

    event Minted(bytes32 indexed bridgeId, address indexed to, uint256 amount);
    event Redeemed(address indexed from, uint256 amount, bytes32 indexed ledgerRef);
    event CapsChanged(uint256 perTransferCap, uint256 windowCap, uint64 windowSeconds);

    /// @notice `bridgeId` was minted before; every bridge id mints once.
    error BridgeIdUsed(bytes32 bridgeId);
    error ZeroAddress();
    error ZeroAmount();
    error LengthMismatch();
    error PerTransferCapExceeded(uint256 amount, uint256 cap);
    /// @notice `amount` exceeds what the rate-limit window has `available` now.
    error WindowCapExceeded(uint256 amount, uint256 available);

    constructor(
        string memory name,
        string memory symbol,
        uint8 decimals_,
        address admin,
        uint256 perTransferCap_,
        uint256 windowCap_,
        uint64 windowSeconds_
    ) ERC20(name, symbol) ERC20Permit(name) {
        if (admin == address(0)) revert ZeroAddress();
        _decimals = decimals_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _setCaps(perTransferCap_, windowCap_, windowSeconds_);
    }

    function decimals() public view override returns (uint8) {
        return _decimals;
    }

    // -- minting ----------------------------------------------------------------------------

    /// @notice Mints `amount` to `to` for the bridge transfer `bridgeId` (once per id).
    /// @dev Checks, in this order: role, pause, `to`, `amount`, the id, the per-transfer cap,
    ///      the window.
    function mint(address to, uint256 amount, bytes32 bridgeId)
        external
        onlyRole(MINTER_ROLE)
        whenNotPaused
    {
        uint256 cap = windowCap;
        uint64 secs = windowSeconds;
        uint256 tokens = _tokensNow(cap, secs);
        tokens = _mintOne(to, amount, bridgeId, perTransferCap, secs, tokens);
        _windowTokens = tokens;
        _windowUpdatedAt = uint64(block.timestamp);
    }

    /// @notice {mint} for each item in order, all or nothing: one bad item reverts the batch with
    ///         that item's error. The items share the window (item i sees what items < i left).
    function mintBatch(
        address[] calldata to,
        uint256[] calldata amounts,
        bytes32[] calldata bridgeIds
    ) external onlyRole(MINTER_ROLE) whenNotPaused {
        uint256 n = to.length;
        if (amounts.length != n || bridgeIds.length != n) revert LengthMismatch();
        uint256 perCap = perTransferCap;
        uint256 cap = windowCap;
        uint64 secs = windowSeconds;
        uint256 tokens = _tokensNow(cap, secs);
        for (uint256 i; i < n; ++i) {
            tokens = _mintOne(to[i], amounts[i], bridgeIds[i], perCap, secs, tokens);
        }
        _windowTokens = tokens;
        _windowUpdatedAt = uint64(block.timestamp);
    }

    /// @notice Whether `bridgeId` has been minted.
    function minted(bytes32 bridgeId) external view returns (bool) {
        return _minted[bridgeId];
    }

    /// @notice What the rate-limit window lets mint now (the per-transfer cap applies as well).
    function windowAvailable() external view returns (uint256) {
        uint64 secs = windowSeconds;
        return secs == 0 ? 0 : _tokensNow(windowCap, secs);
    }

    // -- redeeming --------------------------------------------------------------------------

    /// @notice Burns `amount` of the caller's tokens, to be credited on the ledger to the account
    ///         `ledgerRef` (the ledger's account id, big-endian in the low bytes).
    function redeem(uint256 amount, bytes32 ledgerRef) external whenNotPaused {
        if (amount == 0) revert ZeroAmount();
        _burn(msg.sender, amount);
        emit Redeemed(msg.sender, amount, ledgerRef);
    }

    // -- administration ---------------------------------------------------------------------

    /// @notice Replaces the caps; see the contract's notes for how the window carries over.
    function setCaps(uint256 perTransferCap_, uint256 windowCap_, uint64 windowSeconds_)
        external
        onlyRole(DEFAULT_ADMIN_ROLE)
    {
        _setCaps(perTransferCap_, windowCap_, windowSeconds_);
    }

    function pause() external onlyRole(PAUSER_ROLE) {
        _pause();
    }

    function unpause() external onlyRole(PAUSER_ROLE) {
        _unpause();
    }

    // -- internals --------------------------------------------------------------------------

    function _setCaps(uint256 perTransferCap_, uint256 windowCap_, uint64 windowSeconds_) private {
        uint256 oldCap = windowCap;
        uint256 used = oldCap - _tokensNow(oldCap, windowSeconds);
        _windowTokens = windowCap_ > used ? windowCap_ - used : 0;
        _windowUpdatedAt = uint64(block.timestamp);
        perTransferCap = perTransferCap_;
        windowCap = windowCap_;
        windowSeconds = windowSeconds_;
        emit CapsChanged(perTransferCap_, windowCap_, windowSeconds_);
    }

    /// @dev The bucket's content at this block's timestamp (see the contract's notes). With
    ///      `secs == 0` the bucket counts as full; {_mintOne} blocks that case on its own.
    function _tokensNow(uint256 cap, uint64 secs) private view returns (uint256) {
        uint256 elapsed = block.timestamp - _windowUpdatedAt;
        if (elapsed >= secs) return cap;
        uint256 tokens = _windowTokens + Math.mulDiv(elapsed, cap, secs);
        return tokens < cap ? tokens : cap;
    }

    /// @dev Checks and mints one item; returns the bucket's content after it.
    function _mintOne(
        address to,
        uint256 amount,
        bytes32 bridgeId,
        uint256 perCap,
        uint64 secs,
        uint256 tokens
    ) private returns (uint256) {
        if (to == address(0)) revert ZeroAddress();
        if (amount == 0) revert ZeroAmount();
        if (_minted[bridgeId]) revert BridgeIdUsed(bridgeId);
        if (amount > perCap) revert PerTransferCapExceeded(amount, perCap);
        uint256 available = secs == 0 ? 0 : tokens;
        if (amount > available) revert WindowCapExceeded(amount, available);
        _minted[bridgeId] = true;
        _mint(to, amount);
        emit Minted(bridgeId, to, amount);
        return tokens - amount;
    }
}
