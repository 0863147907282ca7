"""Command-line tools that drive a chain or a node from outside: `deploy`, `request`, `wallet`
(the node's payment Wallet) and `devnet` (node/tools/cli.py registers them).

They are here, not in node/chain/, because they are a different kind of code: one-shot, blocking
(web3's synchronous API, subprocesses, `print`), run by an operator's shell and never by the
running node, and they read the node's config file the way `node/cli.py` does. The async chain
subsystem they talk to imports none of them; they import from it only what a client needs
(codec, ABIs). Like `node/cli.py`, this package sits above everything: it may import
`node.config`, and nothing below imports it."""
