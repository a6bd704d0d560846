#!/usr/bin/env node
// peers.js: throughput of the npm sentiment scorers attune is compared with, on the same corpus
// and measured the same way as bench_score: warm-up, then repeated measurements of at least
// --seconds of wall time each scoring the corpus round and round, best of --repeats.
//
//   vader-sentiment  VADER in JavaScript: SentimentIntensityAnalyzer.polarity_scores(text)
//   sentiment        the most used AFINN scorer: new Sentiment().analyze(text)
//
// The packages come from bench/package.json (bench/run.sh installs them). Run pinned to one CPU
// (taskset -c N node peers.js ...) for a per-core figure; Node's own helper threads then share
// that CPU, as they would in a service. As in bench_score, a measurement lasts until the process
// has had --seconds of CPU time and rates are per CPU second (the wall-time rate is printed too),
// so that other work on a shared machine does not count against the scorer. Prints one JSON object per peer on stdout; every result
// is folded into a printed checksum so no call can be optimised away.
'use strict';

const fs = require('fs');
const path = require('path');

function usage(code) {
  const out = code ? process.stderr : process.stdout;
  out.write('usage: node peers.js [--seconds S] [--repeats N] [--only NAME] CORPUS.ndjson\n');
  process.exit(code);
}

function parseArgs(argv) {
  const args = {seconds: 2, repeats: 3, only: null, corpus: null};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--seconds' || a === '-t') args.seconds = Number(argv[++i]);
    else if (a === '--repeats' || a === '-r') args.repeats = parseInt(argv[++i], 10);
    else if (a === '--only') args.only = argv[++i];
    else if (a === '--help' || a === '-h') usage(0);
    else if (a.startsWith('-')) usage(2);
    else if (args.corpus === null) args.corpus = a;
    else usage(2);
  }
  if (!args.corpus || !(args.seconds >= 0) || !(args.repeats >= 1)) usage(2);
  return args;
}

function loadCorpus(file) {
  const texts = [];
  let bytes = 0;
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    if (!line) continue;
    const o = JSON.parse(line);
    if (typeof o.text !== 'string') throw new Error(`${file}: a line has no "text"`);
    texts.push(o.text);
    bytes += Buffer.byteLength(o.text, 'utf8');
  }
  return {texts, bytes};
}

function pkgVersion(name) {
  try {
    return require(path.join(name, 'package.json')).version;
  } catch (e) {
    return null;
  }
}

// Scores texts round-robin until the process has had minSeconds of CPU time (or ten times that
// in wall time passed); the clocks are read every 64 calls. Returns {n, bytes, seconds,
// cpuSeconds, checksum}.
function measure(score, corpus, byteLens, minSeconds) {
  const texts = corpus.texts;
  let i = 0;
  let n = 0;
  let bytes = 0;
  let sum = 0;
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  let elapsed = 0;
  let cpuSeconds = 0;
  do {
    for (let k = 0; k < 64; k++) {
      sum += score(texts[i]);
      bytes += byteLens[i];
      n++;
      if (++i === texts.length) i = 0;
    }
    elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
    const cpu = process.cpuUsage(cpu0);
    cpuSeconds = (cpu.user + cpu.system) / 1e6;
  } while (cpuSeconds < minSeconds && elapsed < 10 * minSeconds);
  return {n, bytes, seconds: elapsed, cpuSeconds, checksum: sum};
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  const corpus = loadCorpus(args.corpus);
  const byteLens = corpus.texts.map((t) => Buffer.byteLength(t, 'utf8'));

  const peers = [];
  {
    const vader = require('vader-sentiment');
    const sia = vader.SentimentIntensityAnalyzer;
    peers.push({
      name: 'vader-sentiment',
      what: 'VADER (JavaScript port), SentimentIntensityAnalyzer.polarity_scores',
      score: (t) => sia.polarity_scores(t).compound,
    });
  }
  {
    const Sentiment = require('sentiment');
    const s = new Sentiment();
    peers.push({
      name: 'sentiment',
      what: 'AFINN-165 word scores, new Sentiment().analyze',
      score: (t) => s.analyze(t).score,
    });
  }

  for (const p of peers) {
    if (args.only && p.name !== args.only) continue;
    // Warm-up: let V8 optimise the hot paths before anything is timed.
    measure(p.score, corpus, byteLens, Math.min(args.seconds, 1.0));
    let best = null;
    let worstRate = Infinity;
    let checksum = 0;
    for (let r = 0; r < args.repeats; r++) {
      const m = measure(p.score, corpus, byteLens, args.seconds);
      const rate = m.n / m.cpuSeconds;
      checksum += m.checksum;
      worstRate = Math.min(worstRate, rate);
      if (!best || rate > best.n / best.cpuSeconds) best = m;
    }
    const rate = best.n / best.cpuSeconds;
    process.stdout.write(JSON.stringify({
      bench: 'peer',
      name: p.name,
      version: pkgVersion(p.name),
      what: p.what,
      node: process.version,
      utt_per_s: Math.round(rate * 10) / 10,
      mb_per_s: Math.round((best.bytes / 1e6 / best.cpuSeconds) * 1000) / 1000,
      wall_utt_per_s: Math.round((best.n / best.seconds) * 10) / 10,
      seconds: Math.round(best.seconds * 1000) / 1000,
      cpu_seconds: Math.round(best.cpuSeconds * 1000) / 1000,
      utterances: best.n,
      bytes: best.bytes,
      worst_utt_per_s: Math.round(worstRate * 10) / 10,
      checksum: Math.round(checksum * 10000) / 10000,
    }) + '\n');
  }
}

main();
