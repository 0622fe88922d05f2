"""Serves a model that export.py wrote, with jax and numpy alone.

    python docs/serve_exported.py sst2.jax --predict 'a gorgeous, witty film'
    python docs/serve_exported.py ner.jax --predict 'EU rejects German call'
    python docs/serve_exported.py lm.jax --generate 2 --prompt 'ROMEO:' \
        --length 100 --temperature 0.8

It prints what `evaluate.py` prints for the same flags, from the artifact
(MODEL) and its description (MODEL.json) only: no trax, no toolkit. Copy
what you need into your server; docs/accelerators.md#export-for-serving
says what the artifact holds.
"""

import argparse
import json
import re

import jax
import numpy as np


def load(path):
  """(the exported function, its description)."""
  with open(path, 'rb') as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  with open(f'{path}.json', encoding='utf-8') as f:
    return exported, json.load(f)


def split(text, tokens):
  """The words (or characters) of `text`, as the run's pipeline splits it."""
  if tokens['split'] == 'characters':
    return list(text)
  if tokens['lowercase']:
    text = text.lower()
  if tokens['split'] == 'words':  # punctuation marks are words of their own
    text = re.sub(r'<br\s*/?>', ' ', text)
    text = ''.join(c if c.isalnum() or c in " '\t\n\r\f" else f' {c} '
                   for c in text)
  return re.split(r'[ \t\n\r\f\v]+', text.strip(' \t\n\r\f\v'))[
      :tokens['max_len']]


def ids_of(texts, description):
  """int32[len(texts), longest]: the token ids, padded at the end; or a
  vector classifier's f32[len(texts), n_features], numbers separated by
  spaces or commas."""
  tokens = description['tokens']
  if tokens['split'] == 'numbers':
    return np.asarray([[float(v) for v in text.replace(',', ' ').split()]
                       for text in texts], np.float32) * tokens['scale']
  vocabulary = description['vocabulary']
  known = vocabulary.get('words') or vocabulary['chars']
  table = {token: description['first_id'] + i for i, token in enumerate(known)}
  rows = [[table.get(t, vocabulary['unk_id'])
           for t in split(text, description['tokens'])] for text in texts]
  ids = np.full((len(rows), max(map(len, rows))), vocabulary['pad_id'],
                np.int32)
  for row, row_ids in zip(ids, rows):
    row[:len(row_ids)] = row_ids
  return ids


def predict(exported, description, texts):
  """evaluate.py --predict's lines: a class and its probability, or tags."""
  probabilities = np.asarray(exported.call(ids_of(texts, description)))
  names = description['class_names']
  if description['task'] == 'tagging':
    as_typed = dict(description['tokens'], lowercase=False)
    return [' '.join(f'{word}/{names[p.argmax()]}'
                     for word, p in zip(split(text, as_typed), row))
            for text, row in zip(texts, probabilities)]
  return [f'{names[p.argmax()]}\t{p.max():.3f}\t{text}'
          for text, p in zip(texts, probabilities)]


def generate(exported, description, n, prompt, length, temperature, seed):
  """evaluate.py --generate's samples: the state carried from token to
  token, each drawn as the toolkit draws it (never padding or unknown)."""
  state = [np.zeros([n if d is None else d for d in s['shape']], s['dtype'])
           for s in description['state']]
  vocabulary, first = description['vocabulary'], description['first_id']
  # The model is fed the previous token: padding before the first one.
  context = np.array([[vocabulary['pad_id']] + [
      first + vocabulary['chars'].index(c) if c in vocabulary['chars']
      else vocabulary['unk_id'] for c in prompt]] * n, np.int32)
  state, log_probs = exported.call(state, context)
  key, drawn = jax.random.PRNGKey(seed), []
  for _ in range(length):
    key, subkey = jax.random.split(key)
    log_probs = log_probs.at[:, :first].set(-np.inf)
    token = (jax.numpy.argmax(log_probs, axis=-1) if temperature <= 0 else
             jax.random.categorical(subkey, log_probs / temperature))
    token = np.asarray(token, np.int32)
    drawn.append(token)
    state, log_probs = exported.call(state, token[:, None])
  rows = np.stack(drawn, axis=1) if drawn else np.zeros((n, 0), np.int32)
  return [prompt + ''.join(vocabulary['chars'][i - first] for i in row)
          for row in rows]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('model', help='the file export.py wrote (--out).')
  parser.add_argument('--predict', action='append', metavar='TEXT')
  parser.add_argument('--generate', type=int, metavar='N')
  parser.add_argument('--prompt', default='')
  parser.add_argument('--length', type=int, default=300)
  parser.add_argument('--temperature', type=float, default=0.8)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  exported, description = load(args.model)
  if args.generate:
    for i, text in enumerate(generate(exported, description, args.generate,
                                      args.prompt, args.length,
                                      args.temperature, args.seed)):
      print(f'--- sample {i + 1} ---\n{text}\n')
  else:
    print('\n'.join(predict(exported, description, args.predict or [])))


if __name__ == '__main__':
  main()
