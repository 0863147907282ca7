// A test workflow for the node's EVM read capabilities, written against the published @chainlink/cre-sdk.
// Cron: on anvil-devnet, estimate the gas of a call to config.contract, filter that contract's logs
// in blocks config.fromBlock..config.toBlock, and read back config.txHash and its receipt; return
// what it read as one JSON string (numbers as decimal strings, bytes as 0x-hex).
import { blockNumber, bytesToHex, cre, getNetwork, hexToBase64, protoBigIntToBigint, Runner, type Runtime } from '@chainlink/cre-sdk'

type Config = { contract: string; sender: string; txHash: string; fromBlock: number; toBlock: number }

const onCron = (runtime: Runtime<Config>): string => {
	const config = runtime.config
	const net = getNetwork({ chainFamily: 'evm', chainSelectorName: 'anvil-devnet', isTestnet: true })
	if (!net) throw new Error('anvil-devnet is not in the SDK network table')
	const evm = new cre.capabilities.EVMClient(net.chainSelector.selector)
	const estimate = evm.estimateGas(runtime, {
		msg: { from: hexToBase64(config.sender), to: hexToBase64(config.contract), data: '' },
	}).result()
	const filtered = evm.filterLogs(runtime, {
		filterQuery: {
			addresses: [hexToBase64(config.contract)],
			fromBlock: blockNumber(config.fromBlock),
			toBlock: blockNumber(config.toBlock),
		},
	}).result()
	const tx = evm.getTransactionByHash(runtime, { hash: hexToBase64(config.txHash) }).result().transaction
	const receipt = evm.getTransactionReceipt(runtime, { hash: hexToBase64(config.txHash) }).result().receipt
	if (!tx || !receipt) throw new Error('no transaction or receipt in the reply')
	const big = (value?: { absVal: Uint8Array; sign: bigint }) => (value ? protoBigIntToBigint(value).toString() : 'none')
	runtime.log(`estimate=${estimate.gas} logs=${filtered.logs.length}`)
	return JSON.stringify({
		gas: estimate.gas.toString(),
		logs: filtered.logs.map((log) => ({
			address: bytesToHex(log.address), txHash: bytesToHex(log.txHash), block: big(log.blockNumber), index: log.index,
		})),
		tx: { hash: bytesToHex(tx.hash), to: bytesToHex(tx.to), nonce: tx.nonce.toString(), gas: tx.gas.toString(),
			value: big(tx.value) },
		receipt: { status: receipt.status.toString(), gasUsed: receipt.gasUsed.toString(), block: big(receipt.blockNumber),
			logs: receipt.logs.length, txHash: bytesToHex(receipt.txHash) },
	})
}

const initWorkflow = () => [cre.handler(new cre.capabilities.CronCapability().trigger({ schedule: '0 0 * * * *' }), onCron)]

export async function main() {
	const runner = await Runner.newRunner<Config>({
		configParser: (c: Uint8Array) => JSON.parse(new TextDecoder().decode(c)) as Config,
	})
	await runner.run(initWorkflow)
}

main()
