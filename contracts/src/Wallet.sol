// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import {Registry} from "./Registry.sol";

interface IERC20Minimal {
    function transfer(address to, uint256 amount) external returns (bool);
    function balanceOf(address account) external view returns (uint256);
}

/// Funds (ETH as token address(0), or ERC-20) that the Coordinator may move on behalf of the
/// spenders the owner approved: consumers paying for compute, nodes locking collateral while
/// a proof is verified (the SDK's Wallet). The owner can withdraw what is not locked.
contract Wallet {
    address public immutable COORDINATOR;
    address public owner;
    /// spender => token => amount the Coordinator may still move or lock for that spender.
    mapping(address => mapping(address => uint256)) public allowance;
    /// token => amount locked in escrow (not withdrawable, not transferable).
    mapping(address => uint256) internal lockedBalance;

    event Withdrawl(address token, uint256 amount);
    event Approval(address indexed spender, address token, uint256 amount);
    event Escrow(address indexed spender, address token, uint256 amount, bool locked);
    event Transfer(address indexed spender, address token, address indexed to, uint256 amount);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    error InsufficientFunds();
    error InsufficientAllowance();
    error NotCoordinator();
    error Unauthorized();
    error TransferFailed();

    modifier onlyOwner() {
        if (msg.sender != owner) revert Unauthorized();
        _;
    }

    modifier onlyCoordinator() {
        if (msg.sender != COORDINATOR) revert NotCoordinator();
        _;
    }

    constructor(Registry registry, address initialOwner) {
        COORDINATOR = registry.COORDINATOR();
        owner = initialOwner;
        emit OwnershipTransferred(address(0), initialOwner);
    }

    receive() external payable {}

    function transferOwnership(address newOwner) external onlyOwner {
        emit OwnershipTransferred(owner, newOwner);
        owner = newOwner;
    }

    function lockedBalanceOf(address token) external view returns (uint256) {
        return lockedBalance[token];
    }

    function unlockedBalanceOf(address token) public view returns (uint256) {
        uint256 total = token == address(0) ? address(this).balance : IERC20Minimal(token).balanceOf(address(this));
        uint256 locked = lockedBalance[token];
        return total > locked ? total - locked : 0;
    }

    function withdraw(address token, uint256 amount) external onlyOwner {
        if (unlockedBalanceOf(token) < amount) revert InsufficientFunds();
        _send(token, owner, amount);
        emit Withdrawl(token, amount);
    }

    function approve(address spender, address token, uint256 amount) external onlyOwner {
        allowance[spender][token] = amount;
        emit Approval(spender, token, amount);
    }

    function cTransfer(address spender, address token, address to, uint256 amount) external onlyCoordinator {
        _spend(spender, token, amount);
        // Locked funds are collateral of some other request: never pay them out here.
        if (unlockedBalanceOf(token) < amount) revert InsufficientFunds();
        _send(token, to, amount);
        emit Transfer(spender, token, to, amount);
    }

    function cLock(address spender, address token, uint256 amount) external onlyCoordinator {
        if (unlockedBalanceOf(token) < amount) revert InsufficientFunds();
        _spend(spender, token, amount);
        lockedBalance[token] += amount;
        emit Escrow(spender, token, amount, true);
    }

    function cUnlock(address spender, address token, uint256 amount) external onlyCoordinator {
        if (lockedBalance[token] < amount) revert InsufficientFunds();
        lockedBalance[token] -= amount;
        allowance[spender][token] += amount;
        emit Escrow(spender, token, amount, false);
    }

    function _spend(address spender, address token, uint256 amount) internal {
        uint256 allowed = allowance[spender][token];
        if (allowed < amount) revert InsufficientAllowance();
        allowance[spender][token] = allowed - amount;
    }

    function _send(address token, address to, uint256 amount) internal {
        if (amount == 0) return;
        if (token == address(0)) {
            (bool ok,) = payable(to).call{value: amount}("");
            if (!ok) revert TransferFailed();
        } else {
            if (token.code.length == 0) revert TransferFailed();
            (bool ok, bytes memory data) = token.call(abi.encodeCall(IERC20Minimal.transfer, (to, amount)));
            if (!ok || (data.length != 0 && !abi.decode(data, (bool)))) revert TransferFailed();
        }
    }
}

/// Creates Wallets and remembers which it created: the Coordinator only moves funds of those
/// (the SDK's WalletFactory).
contract WalletFactory {
    Registry public immutable REGISTRY;
    mapping(address => bool) internal created;

    event WalletCreated(address indexed caller, address indexed owner, address wallet);

    constructor(Registry registry) {
        REGISTRY = registry;
    }

    function createWallet(address initialOwner) external returns (address wallet) {
        wallet = address(new Wallet(REGISTRY, initialOwner));
        created[wallet] = true;
        emit WalletCreated(msg.sender, initialOwner, wallet);
    }

    function isValidWallet(address wallet) external view returns (bool) {
        return created[wallet];
    }
}
