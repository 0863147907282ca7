// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// Where every other contract of the Infernet set finds its siblings (the SDK's Registry).
/// Deployed first, with the addresses its deployer's next five CREATEs will have, so that
/// every contract after it can take this one address and read the rest.
contract Registry {
    address public immutable COORDINATOR;
    address public immutable INBOX;
    address public immutable READER;
    address public immutable FEE;
    address public immutable WALLET_FACTORY;

    constructor(address coordinator, address inbox, address reader, address fee, address walletFactory) {
        COORDINATOR = coordinator;
        INBOX = inbox;
        READER = reader;
        FEE = fee;
        WALLET_FACTORY = walletFactory;
    }
}
