// The same run as the page, in Node (transformers.js with onnxruntime-node):
//   node node.mjs MODELS_FOLDER '{"model": "eelbert", "task": "feature-extraction", "texts": ["Hello world."]}'
// prints the results as JSON.
import * as transformers from '@huggingface/transformers';
import { run } from './run.js';

const [models, options] = process.argv.slice(2);
transformers.env.allowRemoteModels = false;
transformers.env.localModelPath = models;
console.log(JSON.stringify(await run(transformers, JSON.parse(options))));
