"""The reference architectures (minzwon/sota-music-tagging-models) in PyTorch.

Written for the tests from the paper's description and the reference's
module structure, so that state-dict keys match the published checkpoints.
`forward` takes the dB log-mel `[batch, n_mels, frames]` (the output of the
reference's `to_db`); `from_waveform` runs the reference's torchaudio front
end first (`MelSpectrogram` + `AmplitudeToDB`), restated with torch ops:
no torchaudio release installs next to the CPU torch 2.13 the tests use
(torchaudio stops at 2.11, built against torch 2.11). The restatement is
torchaudio 2.11's `functional.spectrogram`, `MelScale` and
`amplitude_to_DB` line by line, with the filterbank and window taken from
the checkpoint's own buffers (`spec.mel_scale.fb`, `spec.spectrogram.window`).
"""

from __future__ import annotations

import torch
from torch import nn

from features.logmel import LogMelSpec, mel_filterbank


class Conv2d(nn.Module):
    def __init__(self, input_channels, output_channels, shape=3, stride=1, pooling=2):
        super().__init__()
        self.conv = nn.Conv2d(input_channels, output_channels, shape, stride=stride, padding=shape // 2)
        self.bn = nn.BatchNorm2d(output_channels)
        self.relu = nn.ReLU()
        self.mp = nn.MaxPool2d(pooling)

    def forward(self, x):
        return self.mp(self.relu(self.bn(self.conv(x))))


class Res2d(nn.Module):
    def __init__(self, input_channels, output_channels, shape=3, stride=2):
        super().__init__()
        self.conv_1 = nn.Conv2d(input_channels, output_channels, shape, stride=stride, padding=shape // 2)
        self.bn_1 = nn.BatchNorm2d(output_channels)
        self.conv_2 = nn.Conv2d(output_channels, output_channels, shape, padding=shape // 2)
        self.bn_2 = nn.BatchNorm2d(output_channels)
        self.diff = stride != 1 or input_channels != output_channels
        if self.diff:
            self.conv_3 = nn.Conv2d(input_channels, output_channels, shape, stride=stride, padding=shape // 2)
            self.bn_3 = nn.BatchNorm2d(output_channels)
        self.relu = nn.ReLU()

    def forward(self, x):
        out = self.bn_2(self.conv_2(self.relu(self.bn_1(self.conv_1(x)))))
        if self.diff:
            x = self.bn_3(self.conv_3(x))
        return self.relu(x + out)


class MelSpectrogram(nn.Module):
    """torchaudio.transforms.MelSpectrogram(16000, n_fft=512, f_min=0, f_max=8000, n_mels) with its
    defaults (hop 256, periodic Hann window, centred reflect-padded frames, power 2, HTK mel, no norm),
    holding the same buffers, so that the state dict has `spec.mel_scale.fb` and
    `spec.spectrogram.window` like the checkpoints."""

    def __init__(self, n_mels, n_fft=512, hop_length=256):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.mel_scale = nn.Module()
        self.mel_scale.register_buffer(
            "fb", torch.tensor(mel_filterbank(LogMelSpec(n_mels=n_mels)), dtype=torch.float32)
        )
        self.spectrogram = nn.Module()
        self.spectrogram.register_buffer("window", torch.hann_window(n_fft))

    def forward(self, waveform):
        """`[batch, samples]` -> mel power `[batch, n_mels, frames]`."""
        stft = torch.stft(
            waveform,
            self.n_fft,
            hop_length=self.hop_length,
            win_length=self.n_fft,
            window=self.spectrogram.window,
            center=True,
            pad_mode="reflect",
            normalized=False,
            onesided=True,
            return_complex=True,
        )
        power = stft.abs().pow(2.0)
        return torch.matmul(power.transpose(-1, -2), self.mel_scale.fb).transpose(-1, -2)


def amplitude_to_db(power, amin=1e-10):
    """torchaudio.transforms.AmplitudeToDB() (power, reference 1, no top_db)."""
    return 10.0 * torch.log10(torch.clamp(power, min=amin))


class _Tagger(nn.Module):
    def from_waveform(self, waveform):
        """The reference's forward: waveform `[batch, samples]` at 16 kHz -> (tags, embedding)."""
        return self(amplitude_to_db(self.spec(waveform)))


class ShortChunkCNN(_Tagger):
    def __init__(self, n_channels=128, n_mels=128, n_class=50, residual=False):
        super().__init__()
        self.spec = MelSpectrogram(n_mels)
        self.spec_bn = nn.BatchNorm2d(1)
        plan = [1, 1, 2, 2, 2, 2, 4]
        previous = 1
        for index, multiplier in enumerate(plan, start=1):
            channels = n_channels * multiplier
            block = Res2d(previous, channels, stride=2) if residual else Conv2d(previous, channels, pooling=2)
            setattr(self, f"layer{index}", block)
            previous = channels
        self.dense1 = nn.Linear(n_channels * 4, n_channels * 4)
        self.bn = nn.BatchNorm1d(n_channels * 4)
        self.dense2 = nn.Linear(n_channels * 4, n_class)
        self.dropout = nn.Dropout(0.5)
        self.relu = nn.ReLU()

    def forward(self, log_mel):
        x = self.spec_bn(log_mel.unsqueeze(1))
        for index in range(1, 8):
            x = getattr(self, f"layer{index}")(x)
        x = x.squeeze(2)
        if x.size(-1) != 1:
            x = nn.MaxPool1d(x.size(-1))(x)
        x = x.squeeze(2)
        x = self.relu(self.bn(self.dense1(x)))
        embedding = x
        x = torch.sigmoid(self.dense2(self.dropout(x)))
        return x, embedding


class CRNN(_Tagger):
    def __init__(self, n_mels=96, n_class=50):
        super().__init__()
        self.spec = MelSpectrogram(n_mels)
        self.spec_bn = nn.BatchNorm2d(1)
        self.layer1 = Conv2d(1, 64, pooling=(2, 2))
        self.layer2 = Conv2d(64, 128, pooling=(3, 3))
        self.layer3 = Conv2d(128, 128, pooling=(4, 4))
        self.layer4 = Conv2d(128, 128, pooling=(4, 4))
        self.layer5 = nn.GRU(128, 32, 2, batch_first=True)
        self.dropout = nn.Dropout(0.5)
        self.dense = nn.Linear(32, n_class)

    def forward(self, log_mel):
        x = self.spec_bn(log_mel.unsqueeze(1))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = x.squeeze(2).permute(0, 2, 1)
        x, _ = self.layer5(x)
        embedding = x[:, -1, :]
        return torch.sigmoid(self.dense(self.dropout(embedding))), embedding


def build(name: str, n_class: int = 50) -> nn.Module:
    if name == "crnn":
        return CRNN(n_class=n_class)
    return ShortChunkCNN(n_class=n_class, residual=name == "short_chunk_res")


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and non-trivial batch-norm statistics, in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if parameter.dim() >= 2:  # Variance-preserving scale keeps activations O(1).
                parameter.copy_(noise / parameter[0].numel() ** 0.5)
            elif "bn" in name and name.endswith("weight"):
                parameter.copy_(1.0 + 0.2 * noise)
            else:
                parameter.copy_(0.1 * noise)
        for submodule in module.modules():
            if isinstance(submodule, nn.BatchNorm1d | nn.BatchNorm2d):
                submodule.running_mean.copy_(torch.randn(submodule.running_mean.shape, generator=generator) * 0.1)
                submodule.running_var.copy_(torch.rand(submodule.running_var.shape, generator=generator) + 0.5)
    return module.eval()
