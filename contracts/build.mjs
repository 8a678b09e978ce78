#!/usr/bin/env node
// Compiles every contracts/*.sol with the pinned solcjs (npm `solc`, see package.json) and writes
// one artifact per contract to chain/evm/artifacts/<Name>.json: ABI, creation and runtime bytecode,
// compiler version and settings, and the sha256 of every source file the contract was built from.
//
//   node contracts/build.mjs           build and (re)write the artifacts
//   node contracts/build.mjs --check   build in memory; exit 1 if a committed artifact differs,
//                                      is missing, or is stale (its contract no longer exists)
//
// The output is deterministic: same sources + same compiler => byte-identical files (object keys
// sorted, two-space indentation, trailing newline). No compiler is ever downloaded: solcjs ships
// its own wasm build of the pinned version.
import { createHash } from 'node:crypto'
import * as fs from 'node:fs'
import { createRequire } from 'node:module'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const CONTRACTS_DIR = 'contracts'
const ARTIFACTS_DIR = path.join('chain', 'evm', 'artifacts')
const GENERATOR = 'contracts/build.mjs'

// Chosen for the widest deployability (mainnet and the major L2s all run Cancun or later) and
// supported by anvil 1.7.1, whose default hardfork is newer. solc 0.8.30 emits nothing after
// Cancun (MCOPY/transient storage) that a later fork would change for these contracts.
const SETTINGS = {
  evmVersion: 'cancun',
  optimizer: { enabled: true, runs: 200 },
  outputSelection: {
    '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object', 'metadata'] }
  }
}

const require = createRequire(path.join(ROOT, 'package.json'))

function fail (message) {
  console.error(`build.mjs: ${message}`)
  process.exit(1)
}

function sha256 (text) {
  return createHash('sha256').update(text, 'utf8').digest('hex')
}

/** JSON with object keys sorted recursively (array order is kept), 2-space indent, final newline. */
function stableStringify (value) {
  const sortKeys = (v) => {
    if (Array.isArray(v)) return v.map(sortKeys)
    if (v && typeof v === 'object') {
      return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys(v[k])]))
    }
    return v
  }
  return JSON.stringify(sortKeys(value), null, 2) + '\n'
}

function loadSolc () {
  const pinned = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'))
    .devDependencies?.solc
  let solc
  try {
    solc = require('solc')
  } catch (err) {
    fail(`cannot load the npm package 'solc' (run npm install): ${err.message}`)
  }
  const version = solc.version()
  if (!pinned || !version.startsWith(`${pinned}+`)) {
    fail(`solc ${version} is installed but package.json pins ${pinned}; run npm install`)
  }
  return solc
}

/** Source unit name -> content, for our sources and every import solc asks for. */
const loadedSources = new Map()

function readSource (unitName) {
  // Our own sources resolve from the repository root; everything else (e.g. @openzeppelin/...)
  // from node_modules. Source unit names never contain '..' segments here.
  const candidates = unitName.startsWith(`${CONTRACTS_DIR}/`)
    ? [path.join(ROOT, unitName)]
    : [path.join(ROOT, 'node_modules', unitName)]
  for (const file of candidates) {
    if (fs.existsSync(file)) {
      const content = fs.readFileSync(file, 'utf8')
      loadedSources.set(unitName, content)
      return content
    }
  }
  return undefined
}

function findImports (unitName) {
  if (unitName.split('/').includes('..')) return { error: `refusing import path ${unitName}` }
  const contents = readSource(unitName)
  return contents === undefined ? { error: `file not found: ${unitName}` } : { contents }
}

function compile (solc) {
  const files = fs.readdirSync(path.join(ROOT, CONTRACTS_DIR))
    .filter((f) => f.endsWith('.sol'))
    .sort()
  if (files.length === 0) fail(`no .sol files in ${CONTRACTS_DIR}/`)
  const sources = {}
  for (const f of files) {
    const unitName = `${CONTRACTS_DIR}/${f}`
    sources[unitName] = { content: readSource(unitName) }
  }
  const input = { language: 'Solidity', sources, settings: SETTINGS }
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }))

  const errors = (output.errors ?? []).filter((e) => e.severity === 'error')
  for (const e of output.errors ?? []) console.error(e.formattedMessage ?? e.message)
  if (errors.length > 0) fail(`compilation failed with ${errors.length} error(s)`)

  const artifacts = new Map()
  for (const unitName of Object.keys(sources)) {
    for (const [name, c] of Object.entries(output.contracts?.[unitName] ?? {})) {
      if (artifacts.has(name)) fail(`contract name ${name} is defined twice under ${CONTRACTS_DIR}/`)
      const metadata = JSON.parse(c.metadata)
      const sourceHashes = {}
      for (const dep of Object.keys(metadata.sources)) {
        const content = loadedSources.get(dep)
        if (content === undefined) fail(`source ${dep} of ${name} was not loaded by the build`)
        sourceHashes[dep] = sha256(content)
      }
      artifacts.set(name, {
        abi: c.abi,
        bytecode: `0x${c.evm.bytecode.object}`,
        compiler: {
          name: 'solc',
          version: solc.version(),
          settings: { evmVersion: SETTINGS.evmVersion, optimizer: SETTINGS.optimizer }
        },
        contractName: name,
        deployedBytecode: `0x${c.evm.deployedBytecode.object}`,
        generator: GENERATOR,
        sourceName: unitName,
        sources: sourceHashes
      })
    }
  }
  return artifacts
}

/** Artifacts in chain/evm/artifacts written by this script (and so owned by it). */
function existingGenerated () {
  const dir = path.join(ROOT, ARTIFACTS_DIR)
  if (!fs.existsSync(dir)) return []
  return fs.readdirSync(dir).filter((f) => f.endsWith('.json')).filter((f) => {
    try {
      return JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')).generator === GENERATOR
    } catch {
      return false
    }
  })
}

function main () {
  const args = process.argv.slice(2)
  const unknown = args.filter((a) => a !== '--check')
  if (unknown.length > 0) fail(`unknown argument(s): ${unknown.join(' ')} (usage: build.mjs [--check])`)
  const check = args.includes('--check')

  const artifacts = compile(loadSolc())
  const dir = path.join(ROOT, ARTIFACTS_DIR)
  const wanted = new Set([...artifacts.keys()].map((n) => `${n}.json`))
  const stale = existingGenerated().filter((f) => !wanted.has(f))

  if (check) {
    const problems = []
    for (const [name, artifact] of artifacts) {
      const file = path.join(dir, `${name}.json`)
      if (!fs.existsSync(file)) problems.push(`${ARTIFACTS_DIR}/${name}.json is missing`)
      else if (fs.readFileSync(file, 'utf8') !== stableStringify(artifact)) {
        problems.push(`${ARTIFACTS_DIR}/${name}.json differs from a fresh build`)
      }
    }
    for (const f of stale) problems.push(`${ARTIFACTS_DIR}/${f} is stale (no such contract)`)
    if (problems.length > 0) {
      for (const p of problems) console.error(p)
      fail('artifacts are out of date; run `node contracts/build.mjs` and commit the result')
    }
    console.log(`build.mjs: ${artifacts.size} artifact(s) up to date`)
    return
  }

  fs.mkdirSync(dir, { recursive: true })
  for (const [name, artifact] of artifacts) {
    fs.writeFileSync(path.join(dir, `${name}.json`), stableStringify(artifact))
    console.log(`wrote ${ARTIFACTS_DIR}/${name}.json`)
  }
  for (const f of stale) {
    fs.unlinkSync(path.join(dir, f))
    console.log(`removed stale ${ARTIFACTS_DIR}/${f}`)
  }
}

main()
