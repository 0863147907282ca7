// A test workflow for the node's CRE host, written against the published @chainlink/cre-sdk.
// Cron: read a secret, fetch a price from config.priceUrl on each node, agree on the median,
// optionally read a uint256 from config.contract on anvil, and return a summary string.
// HTTP: echo the request input back (and log it); config.authorizedKey, if set, is the one EVM
// address allowed to sign gateway-form (JWT) requests.
// With config.receiver: also a signed report of the price in cents, written through the forwarder.
// EVM log (only with config.logAddress): each log of that contract on anvil -> "log <tx>:<index>".
import {
	bytesToHex, consensusMedianAggregation, cre, encodeCallMsg, type EVMLog, getNetwork, hexToBase64,
	LAST_FINALIZED_BLOCK_NUMBER, ok, prepareReportRequest, Runner, text, type CronPayload, type HTTPPayload,
	type HTTPSendRequester, type Runtime,
} from '@chainlink/cre-sdk'
import { type Address, decodeFunctionResult, encodeAbiParameters, encodeFunctionData, zeroAddress } from 'viem'

type Config = {
	priceUrl: string; contract?: string; schedule?: string; authorizedKey?: string; logAddress?: string; receiver?: string
}

const GET_VALUE = [{ type: 'function', name: 'getValue', inputs: [], outputs: [{ type: 'uint256' }], stateMutability: 'view' }] as const

const fetchPrice = (requester: HTTPSendRequester, config: Config): number => {
	const response = requester.sendRequest({ url: config.priceUrl, method: 'GET' }).result()
	if (!ok(response)) throw new Error(`price source answered HTTP ${response.statusCode}`)
	return Number.parseFloat(text(response))
}

const onCron = (runtime: Runtime<Config>, payload: CronPayload): string => {
	const key = runtime.getSecret({ id: 'PRICE_API_KEY' }).result()
	runtime.log(`cron at ${payload.scheduledExecutionTime?.seconds ?? 0n} key=${key.value.length} chars`)
	const http = new cre.capabilities.HTTPClient()
	const price = http.sendRequest(runtime, fetchPrice, consensusMedianAggregation())(runtime.config).result()
	runtime.log(`median price=${price}`)
	let onchain = 'none'
	if (runtime.config.contract) {
		const net = getNetwork({ chainFamily: 'evm', chainSelectorName: 'anvil-devnet', isTestnet: true })
		if (!net) throw new Error('anvil-devnet is not in the SDK network table')
		const evm = new cre.capabilities.EVMClient(net.chainSelector.selector)
		const reply = evm.callContract(runtime, {
			call: encodeCallMsg({ from: zeroAddress, to: runtime.config.contract as Address,
				data: encodeFunctionData({ abi: GET_VALUE, functionName: 'getValue' }) }),
			blockNumber: LAST_FINALIZED_BLOCK_NUMBER,
		}).result()
		onchain = decodeFunctionResult({ abi: GET_VALUE, functionName: 'getValue', data: bytesToHex(reply.data) }).toString()
		runtime.log(`onchain value=${onchain}`)
	}
	if (runtime.config.receiver) {
		// the price in cents, as a signed report delivered to the receiver through the forwarder
		const cents = BigInt(Math.round(price * 100))
		const report = runtime.report(prepareReportRequest(encodeAbiParameters([{ type: 'uint256' }], [cents]))).result()
		const reply = anvil().writeReport(runtime, { receiver: runtime.config.receiver, report,
			gasConfig: { gasLimit: '500000' } }).result()
		runtime.log(`report written: status=${reply.txStatus} tx=${reply.txHash ? bytesToHex(reply.txHash) : 'none'}`)
	}
	return `price=${price} onchain=${onchain}`
}

const onHttp = (runtime: Runtime<Config>, payload: HTTPPayload): string => {
	const input = new TextDecoder().decode(payload.input)
	runtime.log(`http trigger input=${input}`)
	return `echo: ${input}`
}

const onLog = (runtime: Runtime<Config>, log: EVMLog): string => {
	runtime.log(`log in block ${log.blockNumber ? 'known' : 'unknown'}`)
	return `log ${bytesToHex(log.txHash)}:${log.index}`
}

const anvil = () => {
	const net = getNetwork({ chainFamily: 'evm', chainSelectorName: 'anvil-devnet', isTestnet: true })
	if (!net) throw new Error('anvil-devnet is not in the SDK network table')
	return new cre.capabilities.EVMClient(net.chainSelector.selector)
}

const initWorkflow = (config: Config) => {
	const cron = new cre.capabilities.CronCapability()
	const http = new cre.capabilities.HTTPCapability()
	const logs = config.logAddress
		? [cre.handler(anvil().logTrigger({ addresses: [hexToBase64(config.logAddress)], confidence: 'CONFIDENCE_LEVEL_LATEST' }), onLog)]
		: []
	return [
		cre.handler(cron.trigger({ schedule: config.schedule ?? '*/30 * * * * *' }), onCron),
		cre.handler(http.trigger({
			authorizedKeys: config.authorizedKey ? [{ type: 'KEY_TYPE_ECDSA_EVM', publicKey: config.authorizedKey }] : [],
		}), onHttp),
		...logs,
	]
}

export async function main() {
	const runner = await Runner.newRunner<Config>({
		configParser: (c: Uint8Array) => JSON.parse(new TextDecoder().decode(c)) as Config,
	})
	await runner.run(initWorkflow)
}

main()
