#!/usr/bin/env node
// A strategy client for the nija mesh in Node.js: quotes a signal, submits it, and prints the
// quote and every streamed update as one JSON line each on stdout.
//
//   node client.js --router 127.0.0.1:50051 --user alice --pair BTC-USD --side buy --usd 250
//
// The token comes from --token, --token-file or $NIJA_TOKEN and is sent on every call as
// `authorization: Bearer <token>`, the metadata the mesh's servers read. Money stays a decimal
// string end to end (the wire convention): --usd is sent as typed, and sizes, prices and fees are
// printed as the server sent them, never through a JavaScript number.
//
// Exit status: 0 the order FILLED; 1 it ended REJECTED, FAILED or CANCELLED; 2 a call was refused
// (gRPC status and ErrorInfo reason printed); 3 the stream ended before a terminal state;
// 64 bad usage; 130 interrupted (the order goes on in the mesh: re-attach with the same
// --signal-id and --after-sequence).
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { parseArgs } = require('node:util');

const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const PROTOS = process.env.NIJA_PROTOS || path.resolve(__dirname, '..', '..', 'protos');

const EXIT = { filled: 0, notFilled: 1, refused: 2, unfinished: 3, usage: 64, interrupted: 130 };
const TERMINAL = new Set(['FILLED', 'REJECTED', 'FAILED', 'CANCELLED']);
const SIDES = { buy: 'SIDE_BUY', sell: 'SIDE_SELL' };
const SIGNAL_TYPES = {
  entry: 'SIGNAL_TYPE_ENTRY',
  exit: 'SIGNAL_TYPE_EXIT',
  profit_take: 'SIGNAL_TYPE_PROFIT_TAKE',
  stop_loss: 'SIGNAL_TYPE_STOP_LOSS',
};
// A positive plain decimal: what the mesh accepts for money ("250", "0.5"); no exponent, no sign.
const DECIMAL = /^(?:\d+(?:\.\d*)?|\.\d+)$/;

const USAGE = `usage: node client.js --router HOST:PORT --user U --pair BASE-QUOTE --side buy|sell --usd DECIMAL
                      [--token T | --token-file F]  (default $NIJA_TOKEN)
                      [--signal-id ID] [--type entry|exit|profit_take|stop_loss] [--strategy NAME]
                      [--limit-price DECIMAL] [--after-sequence N] [--no-quote] [--timeout SECONDS]
                      [--ca FILE] [--cert FILE --key FILE] [--allow-plaintext-remote]

  --signal-id       your id for this signal, unique per user. Derive it from the strategy's decision
                    (e.g. "apex-BTC-USD-2026-11-21T10:00Z") so a retry of the same decision can never
                    place a second order: the mesh streams the first submission's updates instead.
                    Default: a fresh random id.
  --after-sequence  re-attach to a signal submitted before: only its updates after this sequence.
  --ca/--cert/--key TLS: the CA that signs the router's certificate, and this client's certificate
                    and key for mTLS (default $NIJA_TLS_CA, $NIJA_TLS_CERT, $NIJA_TLS_KEY).`;

class UsageError extends Error {}

function parseOptions(argv, env) {
  const { values } = parseArgs({
    args: argv,
    options: {
      router: { type: 'string', default: env.NIJA_ROUTER },
      token: { type: 'string' },
      'token-file': { type: 'string' },
      user: { type: 'string' },
      pair: { type: 'string' },
      side: { type: 'string' },
      usd: { type: 'string' },
      type: { type: 'string', default: 'entry' },
      'signal-id': { type: 'string' },
      strategy: { type: 'string', default: 'node-example' },
      'limit-price': { type: 'string' },
      'after-sequence': { type: 'string', default: '0' },
      'no-quote': { type: 'boolean', default: false },
      timeout: { type: 'string', default: '120' },
      ca: { type: 'string', default: env.NIJA_TLS_CA },
      cert: { type: 'string', default: env.NIJA_TLS_CERT },
      key: { type: 'string', default: env.NIJA_TLS_KEY },
      'allow-plaintext-remote': { type: 'boolean', default: env.NIJA_ALLOW_PLAINTEXT_REMOTE === 'true' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) return { help: true };
  for (const name of ['router', 'user', 'pair', 'side', 'usd']) {
    if (!values[name]) throw new UsageError(`--${name} is required`);
  }
  if (!(values.side in SIDES)) throw new UsageError('--side must be buy or sell');
  if (!(values.type in SIGNAL_TYPES)) throw new UsageError(`--type must be one of ${Object.keys(SIGNAL_TYPES).join(', ')}`);
  if (!DECIMAL.test(values.usd)) throw new UsageError(`--usd must be a plain decimal string, got ${JSON.stringify(values.usd)}`);
  if (values['limit-price'] && !DECIMAL.test(values['limit-price'])) throw new UsageError('--limit-price must be a plain decimal string');
  if (!/^\d+$/.test(values['after-sequence'])) throw new UsageError('--after-sequence must be a whole number');
  const timeoutS = Number(values.timeout);
  if (!(timeoutS > 0)) throw new UsageError('--timeout must be a positive number of seconds');
  if (Boolean(values.cert) !== Boolean(values.key)) throw new UsageError('--cert and --key go together');
  if (values.token && values['token-file']) throw new UsageError('--token or --token-file, not both');
  const token = values['token-file'] ? readFile(values['token-file']).toString('utf8').trim() : (values.token || env.NIJA_TOKEN || '').trim();
  if (!token) throw new UsageError('no token: pass --token, --token-file or set NIJA_TOKEN');
  return { ...values, token, timeoutS };
}

function readFile(file) {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw new UsageError(`cannot read ${file}: ${err.code || err.message}`);
  }
}

// ---- the wire ---------------------------------------------------------------------------------

function loadRouterService() {
  const definition = protoLoader.loadSync('nija/router/v1/router.proto', {
    includeDirs: [PROTOS],
    keepCase: true, // field names as in the .proto (signal_id, size_usd), not camelCased
    longs: String, // uint64 sequences must not pass through a float
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).nija.router.v1.RouterService;
}

// google.rpc.Status and ErrorInfo, for the rich error the mesh puts in `grpc-status-details-bin`.
const RPC = protobuf.Root.fromJSON({
  nested: {
    google: {
      nested: {
        rpc: {
          nested: {
            Status: {
              fields: {
                code: { type: 'int32', id: 1 },
                message: { type: 'string', id: 2 },
                details: { rule: 'repeated', type: 'Any', id: 3 },
              },
            },
            Any: { fields: { type_url: { type: 'string', id: 1 }, value: { type: 'bytes', id: 2 } } },
            ErrorInfo: {
              fields: {
                reason: { type: 'string', id: 1 },
                domain: { type: 'string', id: 2 },
                metadata: { keyType: 'string', type: 'string', id: 3 },
              },
            },
          },
        },
      },
    },
  },
});

function errorInfo(metadata) {
  const raw = metadata && metadata.get('grpc-status-details-bin')[0];
  if (!raw) return null;
  try {
    const status = RPC.lookupType('google.rpc.Status').decode(raw);
    for (const detail of status.details) {
      if (detail.type_url.endsWith('/google.rpc.ErrorInfo')) {
        const info = RPC.lookupType('google.rpc.ErrorInfo').decode(detail.value);
        return { reason: info.reason, domain: info.domain, metadata: { ...info.metadata } };
      }
    }
  } catch (_) {
    // A status we cannot parse still has its code and message; report those alone.
  }
  return null;
}

function isLoopback(target) {
  let host = target.replace(/^dns:\/*/, '').replace(/^ipv[46]:/, '');
  host = host.startsWith('[') ? host.slice(1, host.indexOf(']')) : host.split(':').length === 2 ? host.split(':')[0] : host;
  if (host === 'localhost') return true;
  if (net.isIPv4(host)) return host.startsWith('127.');
  return host === '::1';
}

function channelCredentials(opts) {
  if (opts.ca || opts.cert) {
    return grpc.credentials.createSsl(
      opts.ca ? readFile(opts.ca) : null,
      opts.key ? readFile(opts.key) : null,
      opts.cert ? readFile(opts.cert) : null,
    );
  }
  if (!opts['allow-plaintext-remote'] && !isLoopback(opts.router)) {
    // A bearer token on a plaintext network is a token given away (the mesh's own rule).
    throw new UsageError(`plaintext to non-loopback ${opts.router}: pass --ca (TLS) or --allow-plaintext-remote`);
  }
  return grpc.credentials.createInsecure();
}

function authMetadata(token) {
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${token}`);
  return metadata;
}

function deadline(seconds) {
  return new Date(Date.now() + seconds * 1000);
}

// ---- what is printed --------------------------------------------------------------------------

function emit(record) {
  process.stdout.write(JSON.stringify(record) + '\n');
}

function rfc3339(ts) {
  if (!ts) return '';
  const millis = Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6);
  return new Date(millis).toISOString();
}

const shortEnum = (value, prefix) => String(value || '').replace(prefix, '');

function quoteRecord(response) {
  const route = response.route;
  return {
    event: 'quote',
    routable: response.routable,
    reason: response.reason,
    route: route && {
      broker: route.broker,
      method: shortEnum(route.execution_method, 'EXECUTION_METHOD_'),
      estimated_fees: route.estimated_fees,
      estimated_cost: route.estimated_cost,
      legs: route.legs.map((leg) => ({ broker: leg.broker, size_usd: leg.size_usd })),
    },
    brokers: response.brokers.map((b) => ({
      broker: b.broker,
      eligible: b.eligible,
      exclusion: b.exclusion,
      score: b.score ? b.score.total : null,
      expected_price: b.cost ? b.cost.expected_price : '',
      total_cost_usd: b.cost ? b.cost.total_usd : '',
    })),
  };
}

function updateRecord(update) {
  return {
    event: 'update',
    signal_id: update.signal_id,
    sequence: update.sequence,
    state: shortEnum(update.status, 'EXECUTION_STATUS_'),
    broker: update.broker,
    fills: update.fills.map((f) => ({
      venue_trade_id: f.venue_trade_id,
      price: f.price,
      quantity: f.quantity,
      fee: f.fee,
      fee_currency: f.fee_currency,
      liquidity: shortEnum(f.liquidity, 'LIQUIDITY_'),
    })),
    filled_quantity: update.filled_quantity,
    average_price: update.average_price,
    fees_total: update.fees_total,
    reason: update.reason,
    time: rfc3339(update.time),
  };
}

function refused(rpc, err) {
  const info = errorInfo(err.metadata);
  const code = grpc.status[err.code] || String(err.code);
  emit({ event: 'error', rpc, code, reason: info ? info.reason : '', message: err.details || err.message });
  process.stderr.write(`nija: ${rpc} refused: ${code}${info ? ` ${info.reason}` : ''}: ${err.details || err.message}\n`);
  return EXIT.refused;
}

// ---- the calls --------------------------------------------------------------------------------

function makeSignal(opts) {
  const now = Date.now();
  return {
    signal_id: opts['signal-id'] || `node-${crypto.randomUUID().replace(/-/g, '').slice(0, 16)}`,
    user_id: opts.user,
    pair: opts.pair,
    side: SIDES[opts.side],
    size_usd: opts.usd, // a decimal string, as typed
    signal_type: SIGNAL_TYPES[opts.type],
    strategy: opts.strategy,
    timestamp: { seconds: String(Math.floor(now / 1000)), nanos: (now % 1000) * 1e6 },
    limit_price: opts['limit-price'] || '',
  };
}

function quote(client, signal, metadata) {
  return new Promise((resolve, reject) => {
    client.QuoteRoute({ signal }, metadata, { deadline: deadline(10) }, (err, response) => (err ? reject(err) : resolve(response)));
  });
}

function submit(client, signal, afterSequence, metadata, timeoutS) {
  return new Promise((resolve) => {
    let last = '';
    let lastSequence = afterSequence;
    let interrupted = false;
    const call = client.SubmitSignal({ signal, after_sequence: afterSequence }, metadata, { deadline: deadline(timeoutS) });
    process.once('SIGINT', () => {
      // Only this stream stops: the order goes on in the mesh, and the same signal id re-attaches.
      interrupted = true;
      process.stderr.write(`nija: interrupted; re-attach with --signal-id ${signal.signal_id} --after-sequence ${lastSequence}\n`);
      call.cancel();
      resolve(EXIT.interrupted);
    });
    call.on('data', (response) => {
      const record = updateRecord(response.update);
      last = record.state;
      lastSequence = record.sequence;
      emit(record);
    });
    call.on('error', (err) => {
      if (!interrupted) resolve(refused('SubmitSignal', err));
    });
    call.on('end', () => {
      if (last === 'FILLED') resolve(EXIT.filled);
      else if (TERMINAL.has(last)) resolve(EXIT.notFilled);
      else resolve(EXIT.unfinished);
    });
  });
}

async function main(argv) {
  let opts;
  try {
    opts = parseOptions(argv, process.env);
    if (opts.help) {
      process.stdout.write(USAGE + '\n');
      return 0;
    }
    opts.credentials = channelCredentials(opts);
  } catch (err) {
    if (!(err instanceof UsageError) && !(err instanceof TypeError)) throw err; // parseArgs throws TypeErrors
    process.stderr.write(`nija: ${err.message}\n${USAGE}\n`);
    return EXIT.usage;
  }
  const RouterService = loadRouterService();
  const client = new RouterService(opts.router, opts.credentials);
  const metadata = authMetadata(opts.token);
  const signal = makeSignal(opts);
  try {
    if (!opts['no-quote']) {
      try {
        emit(quoteRecord(await quote(client, signal, metadata)));
      } catch (err) {
        return refused('QuoteRoute', err);
      }
    }
    return await submit(client, signal, opts['after-sequence'], metadata, opts.timeoutS);
  } finally {
    client.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`nija: ${err.stack || err}\n`);
    process.exitCode = EXIT.refused;
  },
);
