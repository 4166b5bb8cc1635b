"""Word vectors as plain text (book 14.7): GloVe's `word v1 v2 ...` lines, fastText's too (its first line,
`count dim`, is skipped). dlrun's word2vec writes its `embeddings.txt` in this format; the same reader loads
it or the book's GloVe/fastText files back, and `embedding_layer` turns them into an nn.Embedding for a
vocabulary (frozen or trainable). Cosine nearest neighbours and analogies work on any such table.
"""

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from dlrun.errors import DlrunError

DATA_URL = "http://d2l-data.s3-accelerate.amazonaws.com/"
# The book's pretrained vectors (name: (url, sha1 of the zip)); each zip holds a `vec.txt`.
PRETRAINED = {
    "glove.6b.50d": (DATA_URL + "glove.6B.50d.zip", "0b8703943ccdb6eb788e6f091b8946e82231bc4d"),
    "glove.6b.100d": (DATA_URL + "glove.6B.100d.zip", "cd43bfb07e44e6f27cbcc7bc9ae3d80284fdaf5a"),
    "glove.42b.300d": (DATA_URL + "glove.42B.300d.zip", "b5116e234e9eb9076672cfeabf5469f3eec904fa"),
    "wiki.en": (DATA_URL + "wiki.en.zip", "c1816da3821ae9f43899be655002f6c723e91b88"),
}


class TokenEmbedding:
    """The book's TokenEmbedding: `<unk>` (a zero vector) at index 0, then the file's words in its order."""

    def __init__(self, idx_to_token: Sequence[str], vectors: Tensor):
        self.idx_to_token = ["<unk>", *[t for t in idx_to_token if t != "<unk>"]]
        kept = [i for i, t in enumerate(idx_to_token) if t != "<unk>"]
        self.idx_to_vec = torch.cat([torch.zeros(1, vectors.shape[1]), vectors[kept].float()])
        self.token_to_idx = {token: idx for idx, token in enumerate(self.idx_to_token)}

    def __len__(self) -> int:
        return len(self.idx_to_token)

    def __getitem__(self, tokens: Sequence[str]) -> Tensor:
        return self.idx_to_vec[torch.tensor([self.token_to_idx.get(t, 0) for t in tokens])]

    def index(self, token: str) -> int:
        """The index of a known word; an unknown one is an error (a zero vector has no neighbours)."""
        if token not in self.token_to_idx or token == "<unk>":
            raise DlrunError(
                f"{token!r} is not in the vocabulary ({len(self) - 1} words); query another word"
            )
        return self.token_to_idx[token]


def read_vectors(path: str | Path) -> TokenEmbedding:
    """A GloVe/fastText text file (a folder: its vec.txt, as the book's zips unpack)."""
    path = Path(path)
    if path.is_dir():
        path = path / "vec.txt"
    if not path.is_file():
        urls = ", ".join(f"{name}: {url} (sha1 {sha})" for name, (url, sha) in PRETRAINED.items())
        raise DlrunError(f"word vectors {path} not found; give a GloVe/fastText text file ({urls})")
    tokens, rows, dim = [], [], None
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            parts = line.rstrip().split(" ")
            if len(parts) <= 2:  # fastText's header "count dim", or an empty line
                continue
            if dim is None:
                dim = len(parts) - 1
            if len(parts) - 1 != dim:
                raise DlrunError(f"{path}:{number}: {len(parts) - 1} numbers, the lines before have {dim}")
            try:
                rows.append([float(x) for x in parts[1:]])
            except ValueError:
                raise DlrunError(f"{path}:{number}: not a word followed by numbers") from None
            tokens.append(parts[0])
    if not rows:
        raise DlrunError(f"{path} holds no word vectors (lines of a word and its numbers)")
    return TokenEmbedding(tokens, torch.tensor(rows))


def write_vectors(path: str | Path, tokens: Sequence[str], vectors: Tensor) -> Path:
    """GloVe text format; `<unk>` is left out (readers give unknown words a zero vector)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for token, row in zip(tokens, vectors.detach().float().cpu().tolist(), strict=True):
            if token != "<unk>":
                f.write(token + " " + " ".join(f"{x:.6g}" for x in row) + "\n")
    return path


def embedding_layer(path: str | Path, idx_to_token: Sequence[str], freeze: bool = True) -> nn.Embedding:
    """nn.Embedding.from_pretrained for a vocabulary: row i is the file's vector of idx_to_token[i] (zeros
    for words the file lacks)."""
    table = read_vectors(path)
    return nn.Embedding.from_pretrained(table[list(idx_to_token)], freeze=freeze)


def knn(weights: Tensor, x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The book's knn: the k rows of `weights` with the largest cosine similarity to x."""
    cos = torch.mv(weights, x.reshape(-1)) / torch.sqrt(
        torch.sum(weights * weights, dim=1) * torch.sum(x * x) + 1e-9
    )
    cos, top = torch.topk(cos, k=min(k, len(cos)))
    return top, cos


def nearest(table: TokenEmbedding, word: str, k: int = 3) -> list[tuple[str, float]]:
    """The k words most similar to `word` (itself and `<unk>` left out)."""
    index = table.index(word)
    weights = table.idx_to_vec.clone()
    weights[0] = 0  # <unk>: a zero vector has cosine 0 with everything; never an answer
    top, cos = knn(weights, weights[index], k + 2)
    found = [
        (table.idx_to_token[int(i)], float(c))
        for i, c in zip(top, cos, strict=True)
        if int(i) not in (0, index)
    ]
    return found[:k]


def analogy(table: TokenEmbedding, a: str, b: str, c: str, exclude_inputs: bool = True) -> str:
    """a is to b as c is to ?: the word nearest to vec(b) - vec(a) + vec(c). The book returns the nearest
    word even when it is one of a, b, c (`exclude_inputs=False`); word2vec's and gensim's convention skips
    them."""
    ids = [table.index(w) for w in (a, b, c)]
    vecs = table.idx_to_vec[ids]
    top, _ = knn(table.idx_to_vec[1:], vecs[1] - vecs[0] + vecs[2], 4)
    for i in top.tolist():
        if not exclude_inputs or i + 1 not in ids:
            return table.idx_to_token[i + 1]
    raise DlrunError("the vocabulary is too small for an analogy")
