"""Generator/discriminator pairs of the 1.0 edition's GAN chapter (20.1, 20.2). A GAN model holds both as
`generator` and `discriminator`; task=gan trains them in turn, each with its own optimizer."""

from torch import nn


class GaussianGAN(nn.Module):
    """20.1: G = Linear(latent, dims); D = dims-5-3-1 with tanh. Every parameter ~ N(0, 0.02), as the book."""

    def __init__(self, latent_dim: int = 2, dims: int = 2, hidden=(5, 3), init_std: float = 0.02):
        super().__init__()
        self.latent_shape = (latent_dim,)
        self.generator = nn.Linear(latent_dim, dims)
        h1, h2 = hidden
        self.discriminator = nn.Sequential(
            nn.Linear(dims, h1), nn.Tanh(), nn.Linear(h1, h2), nn.Tanh(), nn.Linear(h2, 1)
        )
        init_normal(self, init_std)


def init_normal(model: nn.Module, std: float) -> None:
    """The book's GAN init: every parameter, biases and BatchNorm scales included, ~ N(0, std)."""
    for p in model.parameters():
        nn.init.normal_(p, 0.0, std)


def _g_block(cin: int, cout: int, stride: int = 2, padding: int = 1) -> list[nn.Module]:
    return [nn.ConvTranspose2d(cin, cout, 4, stride, padding, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def _d_block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)]


class DCGAN(nn.Module):
    """20.2: 64x64 images. G: latent (latent_dim x 1 x 1) -> 4 transposed-conv blocks (8n, 4n, 2n, n channels
    at 4, 8, 16, 32 px) -> channels x 64 x 64 with tanh. D: four conv blocks (n, 2n, 4n, 8n channels) with
    BatchNorm and LeakyReLU 0.2 -> Conv(8n, 1, 4) -> one logit. Parameters ~ N(0, 0.02), as the book."""

    def __init__(
        self, latent_dim: int = 100, channels: int = 3, width_g: int = 64, width_d: int = 64, init_std=0.02
    ):
        super().__init__()
        self.latent_shape = (latent_dim, 1, 1)
        n = width_g
        self.generator = nn.Sequential(
            *_g_block(latent_dim, n * 8, stride=1, padding=0),
            *_g_block(n * 8, n * 4),
            *_g_block(n * 4, n * 2),
            *_g_block(n * 2, n),
            nn.ConvTranspose2d(n, channels, 4, 2, 1, bias=False),
            nn.Tanh(),
        )
        n = width_d
        self.discriminator = nn.Sequential(
            *_d_block(channels, n),
            *_d_block(n, n * 2),
            *_d_block(n * 2, n * 4),
            *_d_block(n * 4, n * 8),
            nn.Conv2d(n * 8, 1, 4, bias=False),
        )
        init_normal(self, init_std)
