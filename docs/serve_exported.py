"""Serves a model that export.py wrote, with jax and numpy alone.

    python docs/serve_exported.py sst2.jax --predict 'a gorgeous, witty film'
    python docs/serve_exported.py ner.jax --predict 'EU rejects German call'
    python docs/serve_exported.py lm.jax --generate 2 --prompt 'ROMEO:' \
        --length 100 --temperature 0.8
    python docs/serve_exported.py dates.jax --translate 'Wed 25 Nov 2026'

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
    text = re.sub(r'<br[ \t\n\r\f]*/?>', ' ', text)  # RE2's \s: ASCII only
    text = ''.join(c if c.isalnum() or c in " '\t\n\r\f" else f' {c} '
                   for c in text)
  return [word for word in re.split(r'[ \t\n\r\f\v]+', text)
          if word][:tokens.get('max_len')]


def ids_of(texts, description):
  """int32[len(texts), longest]: the token ids, padded at the end (with
  characters, int32[len(texts), longest, 1 + max_word_chars]: each word's
  id, then its characters'); or a vector classifier's f32[len(texts),
  n_features], numbers separated by spaces or commas."""
  tokens = description['tokens']
  if tokens['split'] == 'numbers':
    return np.asarray([[float(v) for v in text.replace(',', ' ').split()]
                       for text in texts], np.float32) * tokens['scale']
  vocabulary = description['vocabulary']
  known = next(vocabulary[key] for key in ('words', 'chars', 'tokens')
               if key in vocabulary)
  token_ids = ids_by_token(known, description)
  rows = [[token_ids.get(t, vocabulary['unk_id'])
           for t in split(text, tokens)] for text in texts]
  for text, row in zip(texts, rows):
    if not row:
      raise SystemExit(f'{text!r} has no tokens; pass a text with at least '
                       'one.')
  if 'max_word_chars' in tokens:  # each word's id, then its characters'
    typed = dict(tokens, lowercase=tokens['chars_lowercase'])
    char_ids = ids_by_token(vocabulary['chars'], description)
    rows = [[[word, *(char_ids.get(c, vocabulary['unk_id'])
                      for c in chars[:tokens['max_word_chars']])]
             for word, chars in zip(row, split(text, typed))]
            for text, row in zip(texts, rows)]
  longest = max(map(len, rows))
  per_word = (1 + tokens['max_word_chars'],) if 'max_word_chars' in tokens \
      else ()
  ids = np.full((len(rows), longest, *per_word), vocabulary['pad_id'],
                np.int32)
  for row, row_ids in zip(ids, rows):
    if per_word:
      for cell, word_ids in zip(row, row_ids):
        cell[:len(word_ids)] = word_ids
    else:
      row[:len(row_ids)] = row_ids
  return ids


def ids_by_token(known, description):
  """{token: id} of `known`, the vocabulary's list of tokens."""
  return {token: description['first_id'] + i for i, token in enumerate(known)}


def predict(exported, description, texts):
  """evaluate.py --predict's lines: a class and its probability, or tags."""
  outputs = np.asarray(exported.call(ids_of(texts, description)))
  names = description['class_names']
  if description['task'] == 'tagging':
    as_typed = dict(description['tokens'], lowercase=False)
    # A CRF tagger's function gives the tags; a softmax tagger's, each
    # word's probabilities.
    tags = outputs if description['function'] == 'tags' else outputs.argmax(-1)
    return [' '.join(f'{word}/{names[t]}'
                     for word, t in zip(split(text, as_typed), row))
            for text, row in zip(texts, tags)]
  probabilities = outputs
  return [f'{names[p.argmax()]}\t{p.max():.3f}\t{text}'
          for text, p in zip(texts, probabilities)]


def initial_state(description, rows):
  """The state before a stream's (or sequence's) first token, of `rows`."""
  # jax's dtype names bfloat16, which numpy alone does not know.
  return [np.full([rows if d is None else d for d in s['shape']], s['fill'],
                  jax.numpy.dtype(s['dtype'])) for s in description['state']]


def decode(exported, description, context):
  """evaluate.py --translate or --caption with --beam_width 1: the
  likeliest token at each step, fed back until the end of sequence."""
  vocabulary, first = description['vocabulary'], description['first_id']
  rows = len(context)
  state = initial_state(description, rows)
  token = np.full((rows, 1), vocabulary['pad_id'], np.int32)
  output = np.full((rows, description['max_length']), vocabulary['pad_id'])
  done = np.zeros(rows, bool)
  for t in range(description['max_length']):
    state, log_probs = exported.call(state, token, context)
    best = np.where(done, vocabulary['pad_id'], np.argmax(log_probs, -1))
    output[:, t] = best
    done |= best == vocabulary['eos_id']
    if done.all():
      break
    token = best[:, None].astype(np.int32)
  texts = []
  for row in output:
    pieces = []
    for i in row:
      if i == vocabulary['eos_id']:
        break
      if i >= first:
        pieces.append(vocabulary['tokens'][i - first])
      elif i == vocabulary['unk_id']:
        pieces.append('?' if vocabulary['level'] == 'char' else '<unk>')
    texts.append(('' if vocabulary['level'] == 'char' else ' ').join(pieces))
  return texts


def sources(texts, description):
  """A translator's context: each text's ids, padded to the source length."""
  ids = ids_of(texts, description)
  width = description['context_shape'][1]
  if ids.shape[1] > width:
    raise SystemExit(f'a text is longer than the {width} tokens the model '
                     'reads')
  return np.pad(ids, ((0, 0), (0, width - ids.shape[1])))


def generate(exported, description, n, prompt, length, temperature, seed):
  """evaluate.py --generate's samples: the state carried from token to
  token, each drawn as the toolkit draws it (never padding or unknown)."""
  state = initial_state(description, n)
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
  parser.add_argument('--translate', action='append', metavar='TEXT')
  parser.add_argument('--caption', action='append', metavar='IMAGE_NPY',
                      help='an image as evaluate.py reads it, saved with '
                      'numpy.save: f32[size, size, 3] in [0, 1]')
  parser.add_argument('--generate', type=int, metavar='N')
  parser.add_argument('--prompt', default='')
  parser.add_argument('--length', type=int, default=300)
  parser.add_argument('--temperature', type=float, default=0.8)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  if not (args.predict or args.translate or args.caption or args.generate):
    parser.error('give --predict, --translate, --caption or --generate.')
  exported, description = load(args.model)
  if args.translate:
    outputs = decode(exported, description,
                     sources(args.translate, description))
    print('\n'.join(f'{text}\t{output}'
                    for text, output in zip(args.translate, outputs)))
  elif args.caption:
    outputs = decode(exported, description,
                     np.stack([np.load(path) for path in args.caption]))
    print('\n'.join(f'{path}\t{output}'
                    for path, output in zip(args.caption, outputs)))
  elif args.generate:
    for i, text in enumerate(generate(exported, description, args.generate,
                                      args.prompt, args.length,
                                      args.temperature, args.seed)):
      print(f'--- sample {i + 1} ---\n{text}\n')
  else:
    print('\n'.join(predict(exported, description, args.predict or [])))


if __name__ == '__main__':
  main()
