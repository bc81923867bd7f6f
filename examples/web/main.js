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
document.getElementById('results').textContent = JSON.stringify(output, null, 1);
if (query.get('report') === '1') {
  await fetch('results', { method: 'POST', body: JSON.stringify(output) });
}
