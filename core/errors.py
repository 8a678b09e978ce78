"""The core's error tree. Every error carries a stable machine ``code``.

Nothing above ``core`` ever sees a driver exception: :func:`core.storage_errors.translate`
turns SQL failures into these.
"""

from __future__ import annotations

from typing import Any


class LedgerError(Exception):
    """Base of every domain error. ``code`` is stable and safe to show a client."""

    code = "LEDGER_ERROR"
    #: HTTP status the API maps this error to (kept here so the mapping is one table).
    status = 400

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """The JSON-safe form stored for idempotent replays of a failed request."""
        return {"code": self.code, "message": self.message, "details": self.details}


class ValidationError(LedgerError):
    code = "VALIDATION_ERROR"
    status = 422


class HistoryTooLong(ValidationError):
    """A history bundle would list more entries than one bundle holds (``limit``)."""

    code = "HISTORY_TOO_LONG"


class UnbalancedOperation(ValidationError):
    code = "UNBALANCED_OPERATION"


class InvalidAmount(ValidationError):
    code = "INVALID_AMOUNT"


class AmountOverflow(ValidationError):
    code = "AMOUNT_OVERFLOW"


class AssetMismatch(ValidationError):
    code = "ASSET_MISMATCH"


class ReasonRequired(ValidationError):
    code = "REASON_REQUIRED"


class NotFound(LedgerError):
    code = "NOT_FOUND"
    status = 404


class UnknownAccount(NotFound):
    code = "UNKNOWN_ACCOUNT"


class UnknownAsset(NotFound):
    code = "UNKNOWN_ASSET"


class UnknownOperation(NotFound):
    code = "UNKNOWN_OPERATION"


class UnknownHold(NotFound):
    code = "UNKNOWN_HOLD"


class Conflict(LedgerError):
    code = "CONFLICT"
    status = 409


class AlreadyExists(Conflict):
    code = "ALREADY_EXISTS"


class IdempotencyConflict(Conflict):
    code = "IDEMPOTENCY_CONFLICT"


class AccountFrozen(Conflict):
    code = "ACCOUNT_FROZEN"


class InsufficientFunds(Conflict):
    code = "INSUFFICIENT_FUNDS"


class AlreadyReversed(Conflict):
    code = "ALREADY_REVERSED"


class NotReversible(Conflict):
    code = "NOT_REVERSIBLE"


class HoldNotPending(Conflict):
    code = "HOLD_NOT_PENDING"


class HoldExceeded(Conflict):
    code = "HOLD_AMOUNT_EXCEEDED"


class LinkedOperationFailed(Conflict):
    """An operation of an all-or-nothing group was not applied because another failed."""

    code = "LINKED_OPERATION_FAILED"


class UnknownEpoch(NotFound):
    code = "UNKNOWN_EPOCH"


class UnknownEntry(NotFound):
    code = "UNKNOWN_ENTRY"


class EpochNotSealed(Conflict):
    """The epoch is still open, or sealed but its roots are not computed yet."""

    code = "EPOCH_NOT_SEALED"


class LedgerIntegrityError(LedgerError):
    """Stored data no longer matches the sealed roots (a proof would not verify)."""

    code = "LEDGER_INTEGRITY"
    status = 500


# -- policy engine and compliance ------------------------------------------------------------------


class PolicyDenied(LedgerError):
    """An active policy refused the operation. ``details`` name the policy (id, asset,
    operation type, version) and the rule (id, kind). 403: the request is well formed,
    the policy forbids it. Remembered under the idempotency key like other business
    failures (a retry with the same key gets the same denial)."""

    code = "POLICY_DENIED"
    status = 403


class InvalidPolicy(ValidationError):
    """A policy document breaks the schema; ``details['path']`` points at the problem."""

    code = "INVALID_POLICY"


class UnknownPolicy(NotFound):
    code = "UNKNOWN_POLICY"


class UnknownAttestation(NotFound):
    code = "UNKNOWN_ATTESTATION"


class AlreadyRevoked(Conflict):
    code = "ALREADY_REVOKED"


class StorageError(LedgerError):
    """The database failed in a way that is not the caller's fault. Nothing was written."""

    code = "STORAGE_ERROR"
    status = 503


class Forbidden(LedgerError):
    """The actor may not do this: their role (only COMPLIANCE/ADMIN issue attestations) or
    their place on the resource (a vault viewer moving funds)."""

    code = "FORBIDDEN"
    status = 403


class UnknownUser(NotFound):
    code = "UNKNOWN_USER"


class UserSuspended(Conflict):
    code = "USER_SUSPENDED"


class UnknownApiKey(NotFound):
    code = "UNKNOWN_API_KEY"


class VaultNotFound(NotFound):
    """No such vault, or the actor is not a member (both answer the same: no leak)."""

    code = "VAULT_NOT_FOUND"


class VaultMemberNotFound(NotFound):
    code = "VAULT_MEMBER_NOT_FOUND"


class P2PRequestNotFound(NotFound):
    """No such request, or the actor is neither its requester nor its payer."""

    code = "P2P_REQUEST_NOT_FOUND"


class P2PRequestNotPending(Conflict):
    """The request was already settled, declined, cancelled, or is being settled."""

    code = "P2P_REQUEST_NOT_PENDING"


class P2PRequestExpired(P2PRequestNotPending):
    code = "P2P_REQUEST_EXPIRED"


# -- bridges ----------------------------------------------------------------------------------
class UnknownBridgeToken(NotFound):
    code = "UNKNOWN_BRIDGE_TOKEN"


class BridgePaused(Conflict):
    code = "BRIDGE_PAUSED"


class InvalidAddress(ValidationError):
    code = "INVALID_ADDRESS"


class UnknownBridgeOut(NotFound):
    code = "UNKNOWN_BRIDGE_OUT"


class UnknownRedemption(NotFound):
    """No ``Redeemed`` event recorded under that (chain, transaction, log index)."""

    code = "UNKNOWN_REDEMPTION"


class RedemptionNotSuspended(Conflict):
    """The redemption is not parked in suspense (credited, dropped, still pending, or only
    token dust that maps onto no minor unit)."""

    code = "REDEMPTION_NOT_SUSPENDED"


class SuspenseAlreadyResolved(Conflict):
    code = "SUSPENSE_ALREADY_RESOLVED"


# -- offline allowances and vouchers ---------------------------------------------------------
class InvalidDeviceKey(ValidationError):
    """Not a 32-byte Ed25519 public key, or the proof of possession does not verify."""

    code = "INVALID_DEVICE_KEY"


class DeviceKeyExists(Conflict):
    code = "DEVICE_KEY_EXISTS"


class UnknownDevice(NotFound):
    """No such device, or somebody else's (both answer the same)."""

    code = "UNKNOWN_DEVICE"


class DeviceRevoked(Conflict):
    """The device key was revoked: no allowance is bound to it any more."""

    code = "DEVICE_REVOKED"


class UnknownAllowance(NotFound):
    code = "UNKNOWN_ALLOWANCE"


class AllowanceNotActive(Conflict):
    """The allowance's hold is no longer pending: released, expired or fully captured."""

    code = "ALLOWANCE_NOT_ACTIVE"


class AllowanceReleased(AllowanceNotActive):
    code = "ALLOWANCE_RELEASED"


class AllowanceExpired(AllowanceNotActive):
    code = "ALLOWANCE_EXPIRED"


class AllowanceAbandoned(Conflict):
    """The allowance was left unfinished by its request and the worker's sweep voided it."""

    code = "ALLOWANCE_ABANDONED"


class AllowanceExceeded(Conflict):
    """The vouchers honoured so far plus this one exceed the allowance."""

    code = "ALLOWANCE_EXCEEDED"


class VouchersOutstanding(Conflict):
    """A release names a final total the redeemed vouchers do not reach yet."""

    code = "VOUCHERS_OUTSTANDING"


class AllowanceHold(Conflict):
    """The hold backs an offline allowance: only the allowance's routes move it."""

    code = "ALLOWANCE_HOLD"


class VoucherMalformed(ValidationError):
    code = "VOUCHER_MALFORMED"


class VoucherSignatureInvalid(Conflict):
    code = "VOUCHER_SIGNATURE_INVALID"


class VoucherWrongPayee(Conflict):
    code = "VOUCHER_WRONG_PAYEE"


class VoucherCounterReused(Conflict):
    """Another voucher with this counter (a different payee or amount) was redeemed."""

    code = "VOUCHER_COUNTER_REUSED"


class VoucherInconsistent(Conflict):
    """The voucher's cumulative total contradicts its amount or the allowance."""

    code = "VOUCHER_INCONSISTENT"


class UnknownCreditLine(NotFound):
    code = "UNKNOWN_CREDIT_LINE"


class UnknownRepayment(NotFound):
    code = "UNKNOWN_REPAYMENT"


class NoRiskParameters(Conflict):
    """The collateral asset has no ACTIVE risk parameters: no credit against it."""

    code = "NO_RISK_PARAMETERS"


class UnknownRiskParameters(NotFound):
    """No risk parameters version has this id."""

    code = "UNKNOWN_RISK_PARAMETERS"


class RiskParametersNotDraft(Conflict):
    """Only a DRAFT version can be activated."""

    code = "RISK_PARAMETERS_NOT_DRAFT"


class PriceFrozen(Conflict):
    """The collateral asset's price is stale or untrusted: no new credit, no liquidation."""

    code = "PRICE_FROZEN"


class LtvBreach(Conflict):
    """The request would leave the position over its initial LTV."""

    code = "LTV_BREACH"


class CreditLineExists(Conflict):
    code = "CREDIT_LINE_EXISTS"


class InvalidRiskParameters(ValidationError):
    code = "INVALID_RISK_PARAMETERS"


class DestinationNotReady(ValidationError):
    """The Stellar destination cannot receive the asset now: no trustline, an unauthorized
    one, or no contract at that address."""

    code = "DESTINATION_NOT_READY"


class LinkChallengeInvalid(ValidationError):
    """The signature does not verify with the address's key over the challenge, or the
    challenge is unknown, another user's, expired or used."""

    code = "LINK_CHALLENGE_INVALID"


class AddressAlreadyLinked(Conflict):
    code = "ADDRESS_ALREADY_LINKED"


class PriceSignatureInvalid(LedgerError):
    """A pushed price round without a signer or signature, or whose Ed25519 signature does
    not verify with the named signer's key over the round (``core.risk.price_signing``)."""

    code = "PRICE_SIGNATURE_INVALID"
    status = 401


class UnknownPriceSigner(LedgerError):
    """The round names a signer the server is not configured to trust."""

    code = "UNKNOWN_PRICE_SIGNER"
    status = 403


class PriceSignersNotConfigured(LedgerError):
    """No price signer is configured: the ops price push refuses every round."""

    code = "PRICE_SIGNERS_NOT_CONFIGURED"
    status = 503


ERRORS_BY_CODE: dict[str, type[LedgerError]] = {}


def _register(cls: type[LedgerError]) -> None:
    ERRORS_BY_CODE[cls.code] = cls
    for sub in cls.__subclasses__():
        _register(sub)


_register(LedgerError)


def error_from_dict(data: dict[str, Any]) -> LedgerError:
    """Rebuild a remembered failure (idempotent replay of a failed request)."""
    cls = ERRORS_BY_CODE.get(str(data.get("code")), LedgerError)
    return cls(str(data.get("message", "")), **dict(data.get("details") or {}))


class AppendOnlyViolation(LedgerError):
    """Somebody tried to UPDATE/DELETE an append-only table; the database refused."""

    code = "APPEND_ONLY"
    status = 409


_register(AppendOnlyViolation)
