// One transformers.js pipeline on a few texts, with what the tests compare against onnxruntime in Python and what
// benchmarks/bench_web.py measures. Shared by the page (main.js) and Node (node.mjs).

const ints = (tensor) => tensor.tolist().flat().map(Number); // int64 tensors hold BigInts, which JSON cannot

// A masked-LM EELBERT scores against the whole hash table, which its graph computes from constants: onnxruntime's
// constant folding would compute it once at load, but that needs more memory than WASM has (std::bad_alloc) and
// ~30 s in Node, so fill-mask computes it on each call instead (~1.4 s in Chromium for BERT's 30,522 tokens).
const NO_CONSTANT_FOLDING = { extra: { optimization: { disable_specified_optimizers: 'ConstantFolding' } } };

export async function run(transformers, { model, task, dtype = 'fp32', texts, repeat = 0, session_options }) {
  session_options ??= task === 'fill-mask' ? NO_CONSTANT_FOLDING : {};
  const pipe = await transformers.pipeline(task, model, { dtype, session_options });
  const loaded_ms = performance.now();
  if (!pipe.tokenizer) throw new Error(`${model} has no tokenizer.json: export a checkpoint folder that holds its tokenizer`);
  const results = [];
  let first_result_ms = null;
  for (const text of texts) {
    const encoded = await pipe.tokenizer(text);
    const result = { text, input_ids: ints(encoded.input_ids) };
    if (task === 'feature-extraction') {
      result.last_hidden_state = (await pipe(text)).tolist()[0];
    } else if (task === 'text-classification') {
      result.labels = await pipe(text, { top_k: null });
      result.logits = (await pipe.model(encoded)).logits.tolist()[0];
    } else if (task === 'fill-mask') {
      result.predictions = (await pipe(text, { top_k: 5 })).map(({ score, token, token_str }) => ({ score, token, token_str }));
    } else {
      throw new Error(`task must be feature-extraction, text-classification or fill-mask, got ${task}`);
    }
    first_result_ms ??= performance.now();
    results.push(result);
  }
  const latencies_ms = [];
  for (let i = 0; i < repeat; i++) { // the latency of the pipeline call on the first text
    const start = performance.now();
    await pipe(texts[0]);
    latencies_ms.push(performance.now() - start);
  }
  await pipe.dispose();
  return { model, task, dtype, loaded_ms, first_result_ms, latencies_ms, results };
}
