// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

// Chainlink's price feed interface and its mock from npm @chainlink/contracts 1.2.0, compiled here
// so the risk loop's feed reader (chain/evm/price_feed.py) has the interface's ABI and the chain
// tests can deploy the mock on anvil and push rounds. PriceFeedMock is a test double of a
// Chainlink aggregator (Chainlink's own MockV3Aggregator, unchanged); production reads the real
// feed's address through PriceFeed.
import "@chainlink/contracts/src/v0.8/shared/interfaces/AggregatorV3Interface.sol";
import "@chainlink/contracts/src/v0.8/tests/MockV3Aggregator.sol";

interface PriceFeed is AggregatorV3Interface {}

contract PriceFeedMock is MockV3Aggregator {
  constructor(uint8 decimals_, int256 initialAnswer) MockV3Aggregator(decimals_, initialAnswer) {}
}
