"""torch_models -- the test modules, in a module of their own so that a
whole-module torch.save can be loaded by the converter (with this
directory on PYTHONPATH, as a user's own model class must be)."""
import torch.nn as nn


class Stacked(nn.Module):
    """Two LSTMs of different sizes (the second with a projection)."""

    def __init__(self):
        super().__init__()
        self.lstm1 = nn.LSTM(6, 20)
        self.drop = nn.Dropout(0.3)
        self.lstm2 = nn.LSTM(20, 13, proj_size=5)


class CharLM(nn.Module):
    def __init__(self, bias=True):
        super().__init__()
        self.emb = nn.Embedding(40, 8)
        self.lstm = nn.LSTM(8, 16, num_layers=2, bias=bias)
        self.fc = nn.Linear(16, 40)
        self.out = nn.LogSoftmax(dim=-1)


class Attn(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 8)
        self.att = nn.MultiheadAttention(8, 2)
