"""EELBERT's dynamic embedding: a parameter-free function from a token string to a vector.

Every published checkpoint depends on the exact values computed here (see `HASH_VERSION`). For one
vocabulary token `t` and `d = embedding_size` dimensions:

1. Marking. A continuation piece `##xyz` is hashed as `xyz`; any other token gets the start marker
   U+0002 in front (`\\x02xyz`), so `ing` and `##ing` differ but share n-grams.
2. Special tokens are not split: token `s` gets `project(sig(s))` over all d dimensions.
3. N-grams: for each order n = 1..N, every window of n code points of the marked string.
4. Signature: `sig(g) = MurmurHash3_x86_32(utf8(g), hash_seed) mod B`, B = 2**31 - 1, i.e.
   `mmh3.hash(g, hash_seed, signed=False) % B`; or, with `hash_function="rolling"`,
   `h = hash_seed mod B; for each code point c: h = (h * 1_000_003 + c) mod B`.
5. Projection. Order n owns `floor(d * n / (N(N+1)/2))` consecutive dimensions (the remainder goes
   to order N). Dimension k has the weight
   `w_k = 1 + mmh3.hash(f"eelbert-projection-{k}", 0, signed=False) % (B - 1)`, and an n-gram
   contributes `v_k = (sig * w_k) mod B`, shifted to `v_k - B` when `v_k > B / 2`.
6. Pooling. Dimension k of `E(t)` is `sum(v_k over the token's n-grams of that order)
   / (count * B / 2)`, computed in float64 and rounded to float32; zero when the order has no n-gram.

Everything is integer arithmetic until the final division, so the result does not depend on the
summation order, the device, the process or the library versions. The implementation below is
vectorised over all n-grams of all tokens with torch int64 tensors (MurmurHash3 included), so this
file needs nothing but torch.
"""

import functools
import warnings

import torch


HASH_VERSION = 1  # bump on any change to the steps above; old checkpoints then fail loudly
SUPPORTED_HASH_VERSIONS = (1,)
HASH_FUNCTIONS = ("murmur3", "rolling")
WORD_START_MARKER = "\x02"  # BERT's normalizer strips control characters, so it never occurs in a token
SIGNATURE_MODULUS = 2**31 - 1  # B
ROLLING_HASH_BASE = 1_000_003

_MASK32 = 0xFFFFFFFF
_CHUNK = 4096  # distinct n-grams projected at a time
_TOKENS_PER_CHUNK = 16384


def check_hash_settings(*, embedding_size, max_ngram_order, hash_function, hash_seed, hash_version):
    """Raise a ValueError naming the field for hash settings the embedding cannot be computed with. The one
    check of these fields: the config, the vectorised table and the reference implementation all call it."""
    for name, value in (("embedding_size", embedding_size), ("max_ngram_order", max_ngram_order)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    orders = max_ngram_order * (max_ngram_order + 1) // 2
    if embedding_size < orders:
        raise ValueError(
            f"embedding_size ({embedding_size}) cannot be partitioned among n-gram orders 1..{max_ngram_order}: "
            f"it must be at least {orders} (= N(N+1)/2) so that every order gets a dimension"
        )
    if hash_function not in HASH_FUNCTIONS:
        raise ValueError(f"hash_function must be one of {HASH_FUNCTIONS}, got {hash_function!r}")
    if not isinstance(hash_seed, int) or isinstance(hash_seed, bool) or not 0 <= hash_seed < 2**32:
        raise ValueError(f"hash_seed must be an integer in [0, 2**32), got {hash_seed!r}")
    if hash_version not in SUPPORTED_HASH_VERSIONS:
        raise ValueError(
            f"hash_version={hash_version} is not known to this code (it knows {SUPPORTED_HASH_VERSIONS}); "
            "the checkpoint was made by a newer EELBERT: update its modeling files or the eelbert package"
        )


def order_dimensions(embedding_size: int, max_ngram_order: int) -> list[int]:
    """Number of dimensions owned by each n-gram order 1..N (proportional to n, remainder to N)."""
    total = max_ngram_order * (max_ngram_order + 1) // 2
    dims = [embedding_size * n // total for n in range(1, max_ngram_order + 1)]
    dims[-1] += embedding_size - sum(dims)
    return dims


# ---- MurmurHash3_x86_32, vectorised with int64 tensors holding unsigned 32-bit values ----
# Shifts are written as multiplications and floor divisions by powers of two (the values are non-negative and
# below 2**48): exported to ONNX (eelbert.onnx_export), an int64 shift is a uint64 round trip of the tensor.


def _mul32(x: torch.Tensor, constant: int) -> torch.Tensor:
    # (x * constant) mod 2**32 without int64 overflow: split the constant into 16-bit halves.
    low, high = constant & 0xFFFF, constant >> 16
    return (x * low + ((x * high) & 0xFFFF) * 0x10000) & _MASK32


def _rotl32(x: torch.Tensor, r: int) -> torch.Tensor:
    return ((x * (1 << r)) | (x // (1 << (32 - r)))) & _MASK32


def _scramble(k: torch.Tensor) -> torch.Tensor:
    return _mul32(_rotl32(_mul32(k, 0xCC9E2D51), 15), 0x1B873593)


def murmur3_32(data: torch.Tensor, lengths: torch.Tensor, seed: int) -> torch.Tensor:
    """MurmurHash3_x86_32 of each row of `data` ([rows, width] int64 bytes, zero after `lengths`)."""
    rows, width = data.shape
    data = torch.nn.functional.pad(data, (0, 4 - width % 4 + 4))  # room for the tail of a full row
    h = torch.full((rows,), seed & _MASK32, dtype=torch.int64, device=data.device)
    num_blocks = lengths // 4
    for block in range(width // 4):
        b = data[:, 4 * block : 4 * block + 4]
        k = b[:, 0] | (b[:, 1] * 0x100) | (b[:, 2] * 0x10000) | (b[:, 3] * 0x1000000)
        mixed = _rotl32(h ^ _scramble(k), 13)
        mixed = (mixed * 5 + 0xE6546B64) & _MASK32
        h = torch.where(block < num_blocks, mixed, h)
    # Tail: the 0-3 bytes after the last full block (bytes past the length are zero, so k = 0 is a no-op).
    tail_start = (4 * num_blocks).unsqueeze(1) + torch.arange(3, device=data.device)
    t = data.gather(1, tail_start)
    h = h ^ _scramble(t[:, 0] | (t[:, 1] * 0x100) | (t[:, 2] * 0x10000))
    h = h ^ lengths
    h = h ^ (h // 0x10000)
    h = _mul32(h, 0x85EBCA6B)
    h = h ^ (h // 0x2000)
    h = _mul32(h, 0xC2B2AE35)
    return h ^ (h // 0x10000)


def _utf8(code_points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """UTF-8 bytes of each row of code points ([rows, n], -1 = absent) -> ([rows, 4n] bytes, lengths)."""
    cp, device = code_points.clamp(min=0), code_points.device
    rows, n = cp.shape
    nbytes = torch.where(code_points < 0, 0, 1 + (cp >= 0x80).long() + (cp >= 0x800).long() + (cp >= 0x10000).long())
    # Lead byte: the code point itself (1 byte) or a length marker and its top bits; then continuation
    # bytes 10xxxxxx carrying 6 bits each, most significant first.
    lead_marker = torch.tensor([0, 0, 0xC0, 0xE0, 0xF0], device=device)[nbytes]
    parts = [lead_marker | (cp >> (6 * (nbytes - 1).clamp(min=0)))]
    for j in range(1, 4):
        parts.append(0x80 | ((cp >> (6 * (nbytes - 1 - j)).clamp(min=0)) & 0x3F))
    byte_values = torch.stack(parts, -1)
    offsets = nbytes.cumsum(1) - nbytes
    positions = offsets.unsqueeze(-1) + torch.arange(4, device=device)
    valid = torch.arange(4, device=device) < nbytes.unsqueeze(-1)
    out = torch.zeros(rows, 4 * n, dtype=torch.int64, device=device)
    row_index = torch.arange(rows, device=device).view(rows, 1, 1).expand(rows, n, 4)
    out[row_index[valid], positions[valid]] = byte_values[valid]
    return out, nbytes.sum(1)


def _signatures(code_points: torch.Tensor, hash_function: str, seed: int) -> torch.Tensor:
    """sig(g) in [0, B) for each row of code points ([rows, n], -1 = absent)."""
    if hash_function == "murmur3":
        data, lengths = _utf8(code_points)
        return murmur3_32(data, lengths, seed) % SIGNATURE_MODULUS
    if hash_function == "rolling":
        h = torch.full(code_points.shape[:1], seed % SIGNATURE_MODULUS, dtype=torch.int64, device=code_points.device)
        for column in code_points.unbind(1):
            h = torch.where(column >= 0, (h * ROLLING_HASH_BASE + column) % SIGNATURE_MODULUS, h)
        return h
    raise AssertionError(f"unchecked hash_function {hash_function!r}")  # check_hash_settings rejects it first


@functools.lru_cache(maxsize=8)
def projection_weights(embedding_size: int) -> torch.Tensor:
    """The integer weight w_k in [1, B) of each dimension k (depends on k only). Cached: do not modify."""
    names = [f"eelbert-projection-{k}" for k in range(embedding_size)]
    data, lengths = _utf8(_code_point_rows(names))
    return 1 + murmur3_32(data, lengths, 0) % (SIGNATURE_MODULUS - 1)


def _project(signatures: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Centered integer projection v in [-(B-1)/2, (B-1)/2]: [rows] x [dims] -> [rows, dims] int64."""
    v = (signatures.unsqueeze(1) * weights).remainder_(SIGNATURE_MODULUS)
    # Subtract B where v > B/2. A comparison and a where rather than a shift of bit 30: in an ONNX graph
    # (eelbert.onnx_export) an int64 shift is a round trip of the whole tensor through uint64.
    return torch.where(v > SIGNATURE_MODULUS // 2, v - SIGNATURE_MODULUS, v)


# ---- Strings to code points ----


def _flat_code_points(strings: list[str], device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """All strings' code points back to back (int64) and each string's length, on `device`."""
    try:
        encoded = "".join(strings).encode("utf-32-le")
    except UnicodeEncodeError as error:
        bad = next(s for s in strings if not _encodable(s))
        raise ValueError(f"token {bad!r} is not valid Unicode (lone surrogate): {error.reason}") from None
    flat = torch.frombuffer(bytearray(encoded), dtype=torch.int32) if encoded else torch.zeros(0, dtype=torch.int32, device="cpu")
    return flat.to(device=device, dtype=torch.int64), torch.tensor(list(map(len, strings)), dtype=torch.int64, device=device)


def _encodable(s: str) -> bool:
    try:
        s.encode("utf-32-le")
        return True
    except UnicodeEncodeError:
        return False


def _code_point_rows(strings: list[str], device="cpu") -> torch.Tensor:
    """[len(strings), longest] code points, -1 after each string's end."""
    flat, lengths = _flat_code_points(strings, device)
    rows = torch.full((len(strings), int(lengths.max()) if len(strings) else 0), -1, dtype=torch.int64, device=device)
    row_of = torch.repeat_interleave(torch.arange(len(strings), device=device), lengths)
    starts = lengths.cumsum(0) - lengths
    rows[row_of, torch.arange(flat.numel(), device=device) - starts[row_of]] = flat
    return rows


def mark_token(token: str, continuing_subword_prefix: str | None = "##") -> str:
    """Step 1 for one string: strip the continuation prefix, or put the word-start marker in front."""
    if continuing_subword_prefix and token.startswith(continuing_subword_prefix) and len(token) > len(continuing_subword_prefix):
        return token[len(continuing_subword_prefix) :]
    return WORD_START_MARKER + token


def _mark(flat: torch.Tensor, lengths: torch.Tensor, prefix: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 1 (`mark_token`) on all tokens' code points at once: returns the marked code points and lengths."""
    starts, device = lengths.cumsum(0) - lengths, flat.device
    p = len(prefix) if prefix else 0
    is_continuation = torch.zeros_like(lengths, dtype=torch.bool)
    if p and flat.numel():
        is_continuation = lengths > p
        for j, char in enumerate(prefix):
            is_continuation &= flat[(starts + j).clamp(max=flat.numel() - 1)] == ord(char)
    new_lengths = torch.where(is_continuation, lengths - p, lengths + 1)
    new_starts = new_lengths.cumsum(0) - new_lengths
    token_of = torch.repeat_interleave(torch.arange(len(lengths), device=device), lengths)
    # Each code point moves back by p (continuation pieces; the prefix falls off) or forward by 1 (after the marker).
    destination = new_starts[token_of] + torch.arange(flat.numel(), device=device) - starts[token_of]
    destination += torch.where(is_continuation, -p, 1)[token_of]
    kept = destination >= new_starts[token_of]
    marked = torch.empty(int(new_lengths.sum()), dtype=torch.int64, device=device)
    marked[destination[kept]] = flat[kept]
    marked[new_starts[~is_continuation]] = ord(WORD_START_MARKER)
    return marked, new_lengths


def _sum_rows(row_of: torch.Tensor, column: torch.Tensor, num_rows: int, values: torch.Tensor) -> torch.Tensor:
    """out[r] = sum of values[column[i]] over the i with row_of[i] == r (row_of sorted): a sparse matmul,
    so the [len(column), dims] gather is never materialised."""
    crow = torch.zeros(num_rows + 1, dtype=torch.int64, device=values.device)
    crow[1:] = torch.bincount(row_of, minlength=num_rows).cumsum(0)
    ones = torch.ones(len(column), dtype=values.dtype, device=values.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, column, ones, size=(num_rows, len(values)), device=values.device) @ values


# ---- The embedding table ----


def _pooled_rows(tokens, weights, max_ngram_order, hash_function, hash_seed, continuing_subword_prefix):
    """Steps 1 and 3-6 for every token: [len(tokens), len(weights)] float32, on the weights' device."""
    num_tokens, half_modulus, device = len(tokens), SIGNATURE_MODULUS / 2, weights.device
    table = torch.zeros(num_tokens, len(weights), device=device)

    flat, lengths = _mark(*_flat_code_points(tokens, device), continuing_subword_prefix)
    token_of = torch.repeat_interleave(torch.arange(num_tokens, device=device), lengths)
    position = torch.arange(flat.numel(), device=device) - (lengths.cumsum(0) - lengths)[token_of]
    windows = torch.nn.functional.pad(flat, (0, max_ngram_order - 1))
    # Many tokens share n-grams: hash and project each distinct n-gram once. An n-gram's id is the
    # distinct (id of its (n-1)-gram prefix, last code point) pair, so ids fit in int64 for any n.
    prefix_id = torch.zeros(flat.numel(), dtype=torch.int64, device=device)
    first_dim = 0
    for n, dims in enumerate(order_dimensions(len(weights), max_ngram_order), start=1):
        starts = torch.nonzero(position + n <= lengths[token_of]).squeeze(1)
        keys = (prefix_id[starts] << 21) | windows[starts + n - 1]  # code points < 2**21
        unique_keys, gram_id = torch.unique(keys, return_inverse=True)
        first_start = torch.full((len(unique_keys),), flat.numel(), device=device).scatter_reduce_(0, gram_id, starts, "amin")
        signatures = _signatures(windows.unfold(0, n, 1)[first_start], hash_function, hash_seed)
        projected = torch.empty(len(signatures), dims, dtype=torch.float64, device=device)
        for chunk in range(0, len(signatures), _CHUNK):  # bounds the int64 temporaries
            projected[chunk : chunk + _CHUNK] = _project(signatures[chunk : chunk + _CHUNK], weights[first_dim : first_dim + dims])
        # Sums of integers below 2**53 are exact in float64, whatever the order of addition.
        gram_token = token_of[starts]
        sums = _sum_rows(gram_token, gram_id, num_tokens, projected)
        counts = torch.bincount(gram_token, minlength=num_tokens).double().clamp(min=1).unsqueeze(1)
        table[:, first_dim : first_dim + dims] = sums.div_(counts * half_modulus)
        prefix_id[starts] = gram_id
        first_dim += dims
    return table


def hash_embedding_table(
    tokens: list[str],
    *,
    embedding_size: int,
    max_ngram_order: int = 3,
    hash_function: str = "murmur3",
    hash_seed: int = 0,
    special_tokens: list[str] | tuple[str, ...] = (),
    continuing_subword_prefix: str | None = "##",
    hash_version: int = HASH_VERSION,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """E(t) for every token: a [len(tokens), embedding_size] float32 tensor, computed on `device` (default: the
    CPU; the same values on any device, the arithmetic being exact)."""
    check_hash_settings(embedding_size=embedding_size, max_ngram_order=max_ngram_order, hash_function=hash_function,
                        hash_seed=hash_seed, hash_version=hash_version)
    weights = projection_weights(embedding_size).to(device or "cpu")
    table = torch.empty(len(tokens), embedding_size, device=weights.device)
    # In chunks of tokens, so that the temporaries stay small next to the table itself.
    for start in range(0, len(tokens), _TOKENS_PER_CHUNK):
        chunk = tokens[start : start + _TOKENS_PER_CHUNK]
        table[start : start + len(chunk)] = _pooled_rows(
            chunk, weights, max_ngram_order, hash_function, hash_seed, continuing_subword_prefix
        )

    # Special tokens (step 2) replace their pooled rows with the projection of the whole string.
    special = set(special_tokens)
    special_ids = [i for i, token in enumerate(tokens) if token in special] if special else []
    if special_ids:
        signatures = _signatures(_code_point_rows([tokens[i] for i in special_ids], weights.device), hash_function, hash_seed)
        table[special_ids] = (_project(signatures, weights).double() / (SIGNATURE_MODULUS / 2)).float()
    return table


# ---- The learned n-gram buckets (config.ngram_buckets > 0) ----


def ngram_bucket_ids(
    tokens: list[str],
    *,
    num_buckets: int,
    max_ngram_order: int = 3,
    hash_seed: int = 0,
    special_tokens: list[str] | tuple[str, ...] = (),
    continuing_subword_prefix: str | None = "##",
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The inputs of an `nn.EmbeddingBag(num_buckets, d)` that gives each token the mean of its n-grams' learned
    vectors (as fastText's subword buckets): the flat bucket ids of all tokens, token after token, and the offset
    of each token's first one (int64, on `device`). The n-grams are those of steps 1 and 3 (orders 1..N of the
    marked token, every occurrence); a special token has one n-gram, its whole string (as step 2). The bucket of
    n-gram g is `MurmurHash3_x86_32(utf8(g), (hash_seed + 1) mod 2**32) mod num_buckets`, i.e.
    `mmh3.hash(g, hash_seed + 1, signed=False) % num_buckets`: another seed than the fixed embedding's, so that
    bucket collisions do not follow its signatures."""
    device = device or "cpu"
    seed = (hash_seed + 1) & _MASK32
    num_tokens = len(tokens)
    special = set(special_tokens)
    is_special = torch.tensor([t in special for t in tokens], dtype=torch.bool, device=device)

    flat, lengths = _mark(*_flat_code_points(tokens, device), continuing_subword_prefix)
    token_of = torch.repeat_interleave(torch.arange(num_tokens, device=device), lengths)
    position = torch.arange(flat.numel(), device=device) - (lengths.cumsum(0) - lengths)[token_of]
    windows = torch.nn.functional.pad(flat, (0, max_ngram_order - 1))
    owners, buckets = [], []
    for n in range(1, max_ngram_order + 1):
        starts = torch.nonzero((position + n <= lengths[token_of]) & ~is_special[token_of]).squeeze(1)
        data, byte_lengths = _utf8(windows.unfold(0, n, 1)[starts])
        owners.append(token_of[starts])
        buckets.append(murmur3_32(data, byte_lengths, seed) % num_buckets)
    special_ids = torch.nonzero(is_special).squeeze(1)
    if len(special_ids):
        data, byte_lengths = _utf8(_code_point_rows([tokens[i] for i in special_ids.tolist()], device))
        owners.append(special_ids)
        buckets.append(murmur3_32(data, byte_lengths, seed) % num_buckets)
    owner, order = torch.sort(torch.cat(owners), stable=True)
    counts = torch.bincount(owner, minlength=num_tokens)
    return torch.cat(buckets)[order], counts.cumsum(0) - counts
