// The page: runs run.js in the browser on a model served beside it (models/NAME/), with nothing fetched from
// anywhere else (no Hub, no CDN: the WASM runtime comes from node_modules too). Query parameters: model, task,
// dtype (fp32 or q8), text (repeatable), repeat (timed runs), session_options (JSON, onnxruntime's), report=1 (POST the
// results to /results).
import * as transformers from './node_modules/@huggingface/transformers/dist/transformers.js';
import { run } from './run.js';

const { env } = transformers;
env.allowRemoteModels = false;
env.allowLocalModels = true;
// A path, not a URL: transformers.js 4.3 looks for local files only at paths (with a URL it finds no tokenizer).
env.localModelPath = new URL('models/', location.href).pathname;
env.useBrowserCache = false;
// onnxruntime-web's plain WASM build, served from here (transformers.js would fetch its asyncify build from a CDN,
// and that build has no Cast from int64 to double, which the hash embedding's float64 pooling needs).
const runtime = new URL('node_modules/onnxruntime-web/dist/', location.href).href;
env.backends.onnx.wasm.wasmPaths = {
  mjs: `${runtime}ort-wasm-simd-threaded.mjs`,
  wasm: `${runtime}ort-wasm-simd-threaded.wasm`,
};

const query = new URLSearchParams(location.search);
const options = {
  model: query.get('model') ?? 'eelbert',
  task: query.get('task') ?? 'feature-extraction',
  dtype: query.get('dtype') ?? 'fp32',
  texts: query.getAll('text').length ? query.getAll('text') : ['The quick brown fox jumps over the lazy dog.'],
  repeat: Number(query.get('repeat') ?? 0),
  session_options: query.has('session_options') ? JSON.parse(query.get('session_options')) : undefined,
};
document.getElementById('options').textContent = JSON.stringify(options);

function summary({ model, dtype, loaded_ms, first_result_ms, latencies_ms, results, downloads }) {
  const bytes = downloads.reduce((sum, download) => sum + download.bytes, 0);
  const lines = [`${model} (${dtype}): ${bytes.toLocaleString('en')} bytes downloaded, loaded at ${loaded_ms.toFixed(0)} ms, `
    + `first result at ${first_result_ms.toFixed(0)} ms`];
  if (latencies_ms.length) {
    const sorted = [...latencies_ms].sort((a, b) => a - b);
    lines.push(`${latencies_ms.length} more calls: median ${sorted[sorted.length >> 1].toFixed(2)} ms`);
  }
  for (const result of results) {
    lines.push('', `${result.text} (${result.input_ids.length} tokens)`);
    if (result.last_hidden_state) {
      const vector = result.last_hidden_state[0];
      lines.push(`  ${result.last_hidden_state.length} vectors of ${vector.length}: [${vector.slice(0, 4).map((x) => x.toFixed(4)).join(', ')}, …]`);
    }
    for (const { label, score } of result.labels ?? []) lines.push(`  ${label}: ${score.toFixed(4)}`);
    for (const { token_str, score } of result.predictions ?? []) lines.push(`  ${token_str}: ${score.toExponential(3)}`);
  }
  return lines.join('\n');
}

let output;
try {
  output = await run(transformers, options);
  const downloads = performance.getEntriesByType('resource').filter((entry) => entry.name.includes('/models/'));
  output.downloads = downloads.map((entry) => ({ url: entry.name, bytes: entry.encodedBodySize }));
  output.foreign_requests = performance.getEntriesByType('resource').map((entry) => entry.name)
    .filter((url) => !url.startsWith(location.origin));
  output.user_agent = navigator.userAgent;
} catch (error) {
  output = { error: String(error?.stack ?? error) };
}
window.results = output;
try {
  document.getElementById('summary').textContent = output.error ?? summary(output);
} catch (error) {
  document.getElementById('summary').textContent = String(error); // the results are still reported below
}
document.getElementById('results').textContent = JSON.stringify(output, null, 1);
if (query.get('report') === '1') {
  await fetch('results', { method: 'POST', body: JSON.stringify(output) });
}
